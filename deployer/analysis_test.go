package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// faultyImage builds the app from a patched copy of its source whose GET /
// answers 500 to one request in twenty, counted as the app counts its
// answers, while /readyz passes: a bad release that health checks do not
// catch. Nothing of the product carries the fault: the copy is the
// test's. It is pushed to the stack's registry; the reference is returned.
func faultyImage(t *testing.T, s *localstack.Stack) string {
	t.Helper()
	return patchedImage(t, s, "faulty", "\tif faulty(h, ctx, start) {\n\t\treturn\n\t}\n", `package main

import (
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

var served atomic.Uint64

// faulty answers 500 to one GET / in twenty, and counts it as the app
// counts its answers.
func faulty(h *handler, ctx *fasthttp.RequestCtx, start time.Time) bool {
	if served.Add(1)%20 != 0 {
		return false
	}
	h.m.requests.WithLabelValues("/", "500").Inc()
	ctx.Error("500 injected by the test's patched copy\n", fasthttp.StatusInternalServerError)
	h.rootDuration.Observe(time.Since(start).Seconds())
	return true
}
`)
}

// patchedImage builds the app from a copy of its source patched by the
// test: call goes into GET /'s handler once it has its start time (the
// variables h, ctx and start in scope), and patch, Go source of package
// main, is added as app/patch.go. The image is the product image's last
// stage with the patched binary, tagged name, pushed to the stack's
// registry; the reference is returned.
func patchedImage(t *testing.T, s *localstack.Stack, name, call, patch string) string {
	t.Helper()
	root := imagetest.RepoRoot(t)
	src := t.TempDir()
	for _, p := range []string{"go.mod", "go.sum", "app", "internal/welcome"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-r", filepath.Join(root, p), filepath.Join(src, p)).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v\n%s", p, err, out)
		}
	}
	handler := filepath.Join(src, "app", "handler.go")
	code, err := os.ReadFile(handler)
	if err != nil {
		t.Fatal(err)
	}
	const at = "\tstart := ctx.Time() // when fasthttp began serving it: no clock read of our own\n"
	if !strings.Contains(string(code), at) {
		t.Fatalf("app/handler.go has no line %q to patch: update patchedImage", at)
	}
	patched := strings.Replace(string(code), at, at+call, 1)
	for file, content := range map[string]string{handler: patched, filepath.Join(src, "app", "patch.go"): patch} {
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(ctx, "app"), "./app")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the patched app: %v\n%s", err, out)
	}
	// The product image's last stage, with the patched binary.
	dockerfile := "FROM scratch\nCOPY app /app\nUSER 65532:65532\nENV LISTEN_ADDR=:8080\nEXPOSE 8080\nENTRYPOINT [\"/app\"]\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := s.RegistryAddr + "/counter:" + stacktest.Name(t, name)
	for _, step := range [][]string{{"build", "-q", "-t", ref, ctx}, {"push", ref}} {
		if _, err := imagetest.Docker(step...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _, _ = imagetest.Docker("rmi", ref) })
	return ref
}

// urlLoad calls the URL one request after another and counts its answers
// by phase.
type urlLoad struct {
	mu    sync.Mutex
	phase string
	seen  map[string][2]int // phase -> {answers, 5xx or no answer}
	stop  chan struct{}
	done  chan struct{}
}

func startJudgedLoad(t *testing.T, url string) *urlLoad {
	l := &urlLoad{phase: "before", seen: map[string][2]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 3 * time.Second}
	go func() {
		defer close(l.done)
		deadline := time.Now().Add(10 * time.Minute)
		for time.Now().Before(deadline) {
			select {
			case <-l.stop:
				return
			case <-time.After(3 * time.Millisecond):
			}
			bad := 1
			if resp, err := client.Get(url); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode < 500 {
					bad = 0
				}
			}
			l.mu.Lock()
			c := l.seen[l.phase]
			l.seen[l.phase] = [2]int{c[0] + 1, c[1] + bad}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(l.halt)
	return l
}

func (l *urlLoad) enter(phase string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.phase = phase
}

func (l *urlLoad) counts(phase string) (answers, bad int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.seen[phase]
	return c[0], c[1]
}

func (l *urlLoad) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// TestAnalysisFailsABadCanaryAndPromotesAGoodOne releases, behind the
// environment's front door and under load through its URL, a build whose
// GET / answers 500 to one request in twenty while its health checks
// pass: the deployer's analysis must fail it (exit 4, Nomad reverts it)
// with the numbers. A clean build is promoted (exit 0). A third release,
// detached, leaves its canary waiting as a killed deployer would: status
// says "canary awaiting analysis since", and deployer analyze judges it.
func TestAnalysisFailsABadCanaryAndPromotesAGoodOne(t *testing.T) {
	t.Parallel()
	f, s, url := frontDoorFixture(t, "judge")
	good, _ := releaseImages(t, s)
	faulty := faultyImage(t, s)
	f.writeEnv("dev", redistest.Start(t), 2, "canary = 1\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"30s\"")
	file := filepath.Join(f.dir, "environments", "dev.hcl")
	env, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	analysis := "analysis {\n  alpha = 0.01\n  min_sample = 300\n  interval = \"2s\"\n  max_duration = \"60s\"\n}\n"
	if err := os.WriteFile(file, append(env, analysis...), 0o644); err != nil {
		t.Fatal(err)
	}

	// Without a Prometheus to judge with, nothing is released.
	if _, stderr, code := f.deployer("submit", "-env", "dev", "-image", good); code != exitUsage || !strings.Contains(stderr, "PROMETHEUS_ADDR") {
		t.Fatalf("a release with an analysis block and no Prometheus: exit %d, want %d naming PROMETHEUS_ADDR\n%s", code, exitUsage, stderr)
	}
	judgeWithStack(t, f, s)
	// The first release has no stable instances, so Nomad places it
	// without a canary: nothing to judge.
	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK || rec.Analysis != nil {
		t.Fatalf("first release: exit %d, analysis %+v\n%s", code, rec.Analysis, stderr)
	}
	wantJudgeLabels(t, f, s)
	l := startJudgedLoad(t, url)
	waitFor(t, 30*time.Second, "answers through the front door", func() bool { n, _ := l.counts("before"); return n > 50 })

	l.enter("faulty")
	rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", faulty)
	a := rec.Analysis
	if code != exitAutoReverted || a == nil || a.Verdict != deploy.Fail || a.Outcome != "fail" ||
		!strings.Contains(rec.Detail, "canary failed by analysis: errors: canary ") || !strings.Contains(stderr, "    look ") {
		t.Fatalf("the faulty release: exit %d (want %d), analysis %+v, detail %q\n%s", code, exitAutoReverted, a, rec.Detail, stderr)
	}
	// The failed canary leaves Consul at once and stops 3 s later
	// (shutdown_delay), once the front door no longer sends to it: until
	// then it still answers, and its 500s count as the faulty release's.
	waitFor(t, 30*time.Second, "the failed canary to stop", func() bool {
		al, _, err := f.nomad.Allocations().Info(a.Canaries[0], nil)
		return err == nil && al.ClientStatus != "running"
	})
	l.enter("after faulty")
	last := a.Looks[len(a.Looks)-1]
	took := last.At.Sub(a.Since)
	t.Logf("faulty: failed at look %d, %s after its canary turned healthy: %s", last.N, took.Round(100*time.Millisecond), last.Reason)
	if took > 60*time.Second || last.Canary.Errors == 0 {
		t.Errorf("the faulty canary was failed %s after it turned healthy, on %+v; want within 60 s, on its errors", took, last.Canary)
	}
	n, bad := l.counts("faulty")
	t.Logf("through the URL during the faulty release: %d answers, %d 5xx or none (%.2f %%)", n, bad, 100*float64(bad)/float64(max(n, 1)))
	if n == 0 || float64(bad) >= 0.02*float64(n) {
		t.Errorf("users saw %d errors of %d answers during the faulty release; want under 2 %%", bad, n)
	}

	clean := imageVariant(t, s, 1)
	l.enter("clean")
	// -wait: Nomad's revert of the faulty release has a deployment of its
	// own, which may still run.
	rec, code, stderr = submitJSON(t, f, "-env", "dev", "-image", clean, "-wait", "90s")
	l.enter("after clean")
	if a := rec.Analysis; code != exitOK || a == nil || a.Verdict != deploy.Promote || a.Outcome != "pass" {
		t.Fatalf("the clean release: exit %d, analysis %+v, detail %q\n%s", code, a, rec.Detail, stderr)
	}
	passed := rec.Analysis.Looks[len(rec.Analysis.Looks)-1]
	t.Logf("clean: promoted at look %d, %s after its canary turned healthy: %s", passed.N, passed.At.Sub(rec.Analysis.Since).Round(100*time.Millisecond), passed.Reason)
	if n, bad := l.counts("after faulty"); bad > 0 {
		t.Errorf("users saw %d errors of %d answers after the faulty release was reverted; want none", bad, n)
	}

	// A deployer SIGKILLed while it judges: the real binary, killed once it
	// says it judges (its first look comes an interval later, so before
	// any verdict). Its canary waits, and status says so.
	waiting := imageVariant(t, s, 2)
	killMidAnalysis(t, f, "-env", "dev", "-image", waiting)
	var out string
	waitFor(t, 60*time.Second, "status to say the canary awaits its analysis", func() bool {
		out, _, _ = f.deployer("status", "-env", "dev")
		return strings.Contains(out, "canary awaiting analysis since ")
	})
	if !strings.Contains(out, "deployer analyze -env dev") {
		t.Errorf("status does not name deployer analyze:\n%s", out)
	}
	// The killed deployer's lock lasts until Consul ends its session (twice
	// its 10 s TTL), which -wait waits out.
	out, stderr, code = f.deployer("analyze", "-env", "dev", "-json", "-wait", "60s")
	var resumed deploy.Record
	if err := json.Unmarshal([]byte(out), &resumed); err != nil || code != exitOK || resumed.Analysis == nil || resumed.Analysis.Verdict != deploy.Promote {
		t.Fatalf("deployer analyze: exit %d, %v, analysis %+v\n%s", code, err, resumed.Analysis, stderr)
	}
	if n, bad := l.counts("after clean"); bad > 0 {
		t.Errorf("users saw %d errors of %d answers after the clean release; want none", bad, n)
	}

	// A promotion by hand while the deployer judges: with a minimum sample
	// the canary cannot reach in the minute the analysis may take, only
	// the hand decides. The deployer notices, says so, and follows the
	// deployment to its end.
	if err := os.WriteFile(file, append(env, strings.Replace(analysis, "min_sample = 300", "min_sample = 1000000", 1)...), 0o644); err != nil {
		t.Fatal(err)
	}
	type result struct {
		rec    deploy.Record
		code   int
		stderr string
	}
	done := make(chan result, 1)
	byHand := imageVariant(t, s, 3)
	go func() {
		rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", byHand)
		done <- result{rec, code, stderr}
	}()
	var st deploy.Status
	waitFor(t, 60*time.Second, "the canary to wait for its analysis", func() bool {
		out, _, _ := f.deployer("status", "-env", "dev", "-json")
		return json.Unmarshal([]byte(out), &st) == nil && st.Deployment != nil && st.Deployment.AwaitingPromotion != "" && resumed.Version != nil && st.Deployment.Version > *resumed.Version
	})
	if _, code := f.nomadCLI("deployment", "promote", st.Deployment.ID); code != 0 {
		t.Fatalf("nomad deployment promote: exit %d", code)
	}
	res := <-done
	if a := res.rec.Analysis; res.code != exitOK || a == nil || a.Verdict != "" || !strings.Contains(res.rec.Detail, "promoted outside the deployer") {
		t.Errorf("a release promoted by hand while judged: exit %d, analysis %+v, detail %q; want exit 0, no verdict of the deployer's, the hand's promotion said\n%s",
			res.code, a, res.rec.Detail, res.stderr)
	}
}

// killMidAnalysis runs deployer submit args as its own process, built from
// this checkout, and SIGKILLs it once it says it judges the canary.
func killMidAnalysis(t *testing.T, f *fixture, args ...string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "deployer")
	build := exec.Command("go", "build", "-o", bin, "./deployer")
	build.Dir = imagetest.RepoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./deployer: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append([]string{"submit", "-environments", filepath.Join(f.dir, "environments"),
		"-job", filepath.Join(f.dir, "jobs", "counter.nomad.hcl")}, args...)...)
	cmd.Env = os.Environ()
	for k, v := range f.env {
		cmd.Env = append(cmd.Env, k+"="+v) // the last of a name wins
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	judging := make(chan bool, 1)
	var said strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		found := false
		for sc.Scan() {
			said.WriteString(sc.Text() + "\n")
			if !found && strings.HasPrefix(sc.Text(), "==> judging canary") {
				found = true
				judging <- true
			}
		}
		if !found {
			judging <- false
		}
	}()
	select {
	case ok := <-judging:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("deployer submit ended without judging:\n%s", stacktest.Redact(said.String()))
		}
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatal("deployer submit did not start judging in 3 minutes")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("deployer submit %s, SIGKILLed while it judged:\n%s", strings.Join(args, " "), stacktest.Redact(said.String()))
}
