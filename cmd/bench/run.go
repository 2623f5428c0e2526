package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type report struct {
	Date     string          `json:"date"`
	Cores    int             `json:"cores"`
	App      *appReport      `json:"app,omitempty"`
	Deployer *deployerReport `json:"deployer,omitempty"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "bench-results", "folder for the report and chart")
	only := fs.String("only", "", `"app" or "deployer" to run one half`)
	conns := fs.String("c", "16,64,256", "app concurrencies")
	dur := fs.Duration("d", 5*time.Second, "load duration per app run")
	appRounds := fs.Int("app-rounds", 3, "interleaved runs of each app point; the report shows their medians")
	appRev := fs.String("app-rev", "", "git revision of the app to bench; empty: the working tree")
	baseline := fs.String("baseline", "9f07735", "git revision of an app to bench beside it in the same rounds, on the same Redis and loads (9f07735: the epoll loop); empty: none")
	frontDoor := fs.Bool("front-door", true, "also load the app's GET / through HAProxy with the local stack's config (a Consul agent feeding it), in the same rounds")
	versions := fs.Int("versions", 50, "job versions for the history benchmark")
	rounds := fs.Int("rounds", 5, "repetitions of each deployer comparison")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *appRounds < 1 {
		return fmt.Errorf("-app-rounds %d: want at least 1", *appRounds)
	}
	var cs []int
	for _, f := range strings.Split(*conns, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			return fmt.Errorf("-c %q: want a comma-separated list of connection counts", *conns)
		}
		cs = append(cs, c)
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "counter-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	rep := &report{Date: time.Now().UTC().Format(time.RFC3339), Cores: runtime.NumCPU()}
	if *only == "" || *only == "app" {
		o := appOptions{conns: cs, rounds: *appRounds, d: *dur, appRev: *appRev, baselineRev: *baseline, frontDoor: *frontDoor}
		if rep.App, err = benchApp(ctx, root, work, o, stderr); err != nil {
			return fmt.Errorf("app: %w", err)
		}
	}
	if *only == "" || *only == "deployer" {
		if rep.Deployer, err = benchDeployer(ctx, root, work, *versions, *rounds, stderr); err != nil {
			return fmt.Errorf("deployer: %w", err)
		}
	}

	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102-150405")
	var table strings.Builder
	writeTable(&table, rep)
	fmt.Fprint(stdout, table.String())
	if err := os.WriteFile(filepath.Join(*out, "bench-"+stamp+".txt"), []byte(table.String()), 0o644); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(*out, "bench-"+stamp+".json"), b, 0o644); err != nil {
		return err
	}
	if rep.App != nil {
		chart := filepath.Join(*out, "throughput-"+stamp+".png")
		if err := throughputChart(rep, chart); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nchart: %s\n", chart)
	}
	fmt.Fprintf(stdout, "report: %s\n", filepath.Join(*out, "bench-"+stamp+".txt"))
	if rep.App != nil {
		for _, r := range rep.App.results() {
			if !r.ExactOK {
				return fmt.Errorf("app %s: counter check failed: %s", r.Revision, r.Exact)
			}
			if r.FrontDoorFailed > 0 {
				return fmt.Errorf("app %s: %d requests through the front door failed", r.Revision, r.FrontDoorFailed)
			}
		}
	}
	return nil
}

func repoRoot() (string, error) {
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", fmt.Errorf("run bench inside the repository: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func gitRevision(root string) string {
	out, _ := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output()
	return strings.TrimSpace(string(out))
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is a server the benchmark started.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(ctx context.Context, logPath string, env []string, name string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func waitFor(limit time.Duration, ready func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpOK(url string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, res.Status)
	}
	return nil
}
