// Package promtest runs a real Prometheus for a test: the pinned build
// (scripts/hashitools prometheus), on a free port of 127.0.0.1, with the
// scrape configs the test gives, stopped when the test ends.
package promtest

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/testsupport/envtest"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
)

// Server is a running Prometheus.
type Server struct {
	Addr string // http://127.0.0.1:PORT
	log  *syncBuffer
}

// Binary finds the pinned Prometheus as the stack does: scripts/hashitools
// prints its path, building it the first time (minutes; then cached).
func Binary(tb testing.TB) string {
	tb.Helper()
	envtest.NeedsServers(tb, "Prometheus")
	cmd := exec.Command(filepath.Join(imagetest.RepoRoot(tb), "scripts", "hashitools"), "prometheus")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	path, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "prometheus=")
	if err != nil || !ok {
		envtest.Unavailable(tb, "scripts/hashitools prometheus: %v (%q)", err, out)
	}
	return path
}

// Start runs Prometheus with a global scrape interval of 1 s and
// scrapeConfigs, YAML list items of scrape_configs (each starting "- job_name: ..."),
// and waits until it is ready.
func Start(tb testing.TB, scrapeConfigs string) *Server {
	tb.Helper()
	bin := Binary(tb)
	dir := tb.TempDir()
	cfg := "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n" + indent(scrapeConfigs)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	port := envtest.FreePort(tb)
	s := &Server{Addr: "http://127.0.0.1:" + strconv.Itoa(port), log: new(syncBuffer)}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if tb.Failed() {
			tb.Logf("prometheus log:\n%s", s.log)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Addr+"/-/ready", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case <-exited:
			tb.Fatalf("prometheus exited at start:\n%s", s.log)
		case <-ctx.Done():
			tb.Fatalf("prometheus at %s not ready after 60s:\n%s", s.Addr, s.log)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Log is what Prometheus wrote so far.
func (s *Server) Log() string { return s.log.String() }

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n") + "\n"
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// StaticTarget is a scrape config for one target with labels, such as
// those the stack's Prometheus gives an allocation (alloc, service,
// canary).
func StaticTarget(job, addr string, labels map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "- job_name: %q\n  static_configs:\n  - targets: [%q]\n    labels:\n", job, addr)
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		fmt.Fprintf(&b, "      %s: %q\n", k, labels[k])
	}
	return b.String()
}
