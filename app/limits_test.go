package main

import (
	"bufio"
	"errors"
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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/testsupport/envtest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

// The tests in this file attack the app as hostile clients would, each
// against one of the limits docs/app.md promises, on a real Redis.

// The limits as docs/app.md promises them, written out again here so that a
// change to the app's constants fails the tests rather than moving them.
const (
	promisedHeadTime = 5 * time.Second // to send a request head, from its first byte
	promisedIdleTime = 5 * time.Second // a silent connection stays open
)

// process is the app run as a process of its own, as Docker runs it, so that
// its memory, CPU and descriptors can be read from outside.
type process struct {
	url    string
	addr   string
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
}

// appBinary is the app built as the Dockerfile builds it, once per test
// run: not this test binary, which -race makes several times larger and
// slower than what users run.
var appBinary = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(appBuildDir, "app")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./app: %v\n%s", err, out)
	}
	return bin, nil
})

// startProcess runs the app, built as users run it, against redisAddr, with
// the command line wrap (e.g. prlimit) in front of it, and waits for
// /healthz.
func startProcess(t *testing.T, redisAddr string, wrap ...string) *process {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("reads the app's memory and CPU from /proc")
	}
	bin, err := appBinary()
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(redisAddr)
	argv := append(wrap, bin)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(withoutNomad(os.Environ()),
		"HOST="+host, "PORT="+port, "LISTEN_ADDR=127.0.0.1:0")
	p := &process{cmd: cmd, stderr: new(syncBuffer), exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("app log:\n%s", p.stderr)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if addr, ok := listeningAddr(p.stderr.String()); ok {
			p.addr, p.url = addr, "http://"+addr
			if resp, err := http.Get(p.url + "/healthz"); err == nil {
				resp.Body.Close()
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("app exited at start:\n%s", p.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("app not healthy after 10s:\n%s", p.stderr)
		}
	}
}

// procStatus reads a "Name:  value kB" line of /proc/PID/status, in KiB.
func (p *process) statusKiB(t *testing.T, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("/proc/PID/status has no %s", name)
	return 0
}

// cpu is the app's user and system CPU time so far.
func (p *process) cpu(t *testing.T) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// closedAfter waits for the app to close c and says how long that took from
// start; the test's own bound is limit.
func closedAfter(t *testing.T, c net.Conn, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	_ = c.SetReadDeadline(start.Add(limit))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v (read %q)", limit, b)
	}
	return time.Since(start)
}

// A client that sends a request head a byte at a time is closed when the
// read timeout runs out, counted from its first byte: each byte does not
// start the timeout again. (The epoll loop restarted it on every byte and
// kept 20 of 20 such connections open at 44 s.)
func TestTricklingRequestHeadIsClosed(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	c := dialApp(t, a.url)
	start := time.Now()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	took := closedAfter(t, c, start, 3*promisedHeadTime)
	if took > promisedHeadTime+2*time.Second {
		t.Errorf("closed %v after the head began, want about %v", took.Round(time.Millisecond), promisedHeadTime)
	}
	if v, _ := rdb.Get(counterKey); v != "" {
		t.Errorf("%s = %q, want no visit counted", counterKey, v)
	}
}

// A connection that sends nothing, at first or after a request, is closed
// within the idle timeout.
func TestSilentConnectionIsClosed(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	for _, first := range []string{"", "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"} {
		name := "before any request"
		if first != "" {
			name = "after a request"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := dialApp(t, a.url)
			start := time.Now()
			if _, err := io.WriteString(c, first); err != nil {
				t.Fatal(err)
			}
			took := closedAfter(t, c, start, 3*promisedIdleTime)
			if took > promisedIdleTime+2*time.Second {
				t.Errorf("closed after %v, want about %v", took.Round(time.Millisecond), promisedIdleTime)
			}
		})
	}
}

// Requests that are not well-formed HTTP, or that name no well-formed Host,
// are answered 400 at once and count no visit; well-formed ones are counted.
func TestMalformedRequestsAreRefusedAtOnce(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	tests := []struct {
		name, raw string
		code      int
	}{
		{"refuses/HTTP/0.9 request line", "GET /\r\n\r\n", 400},
		{"refuses/not a request line", "XYZ\r\n\r\n", 400},
		{"refuses/empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 400},
		{"refuses/no Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 400},
		{"refuses/Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"refuses/Host with a path and user", "GET / HTTP/1.1\r\nHost: evil.com/@x\r\n\r\n", 400},
		{"refuses/Host with an open bracket", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400},
		{"refuses/Host with a user", "GET / HTTP/1.1\r\nHost: u@evil.com\r\n\r\n", 400},
		{"refuses/Host with a bad port", "GET / HTTP/1.1\r\nHost: example.com:http\r\n\r\n", 400},
		{"refuses/two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"refuses/a head larger than the buffer", "GET / HTTP/1.1\r\nHost: t\r\nX: " + strings.Repeat("a", bufferSize) + "\r\n\r\n", 431},
		{"counts/a host name", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 200},
		{"counts/an address and port", "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n", 200},
		{"counts/an IPv6 address and port", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 200},
		{"counts/HTTP/1.0 without Host (HAProxy's checks)", "GET / HTTP/1.0\r\n\r\n", 200},
	}
	var counted atomic.Int64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialApp(t, a.url)
			if _, err := io.WriteString(c, tt.raw); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer within 1s: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.code)
			}
			if resp.StatusCode == 200 {
				counted.Add(1)
			}
		})
	}
	if v, _ := rdb.Get(counterKey); v != strconv.FormatInt(counted.Load(), 10) {
		t.Errorf("%s = %q after %d answers of 200, want one visit each and none for the others", counterKey, v, counted.Load())
	}
}

// Clients that pipeline requests and never read their answers cost the app
// its buffers and a goroutine each, and no more: once its write to a
// client blocks, the app stops reading that client's requests. (The epoll
// loop grew 458 KiB a connection.)
func TestClientsThatNeverReadCostLittle(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	p := startProcess(t, rdb.Addr())
	before := p.statusKiB(t, "VmRSS")

	const conns = 200
	req := "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
	burst := strings.Repeat(req, (256<<10)/len(req))
	var wg sync.WaitGroup
	for range conns {
		c := dialApp(t, p.url)
		wg.Go(func() {
			// Blocks once the app stops reading; ends when the test
			// closes c or the app does (its write timeout).
			for {
				if _, err := io.WriteString(c, burst); err != nil {
					return
				}
			}
		})
	}
	// Until the app's writes have blocked: its CPU stops moving.
	var peak int64
	last := p.cpu(t)
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		peak = max(peak, p.statusKiB(t, "VmRSS"))
		now := p.cpu(t)
		if now == last {
			break
		}
		last = now
	}
	per := (peak - before) / conns
	t.Logf("RSS %d KiB before, %d KiB with %d clients that never read: %d KiB each", before, peak, conns, per)
	if per > 100 {
		t.Errorf("each client that never reads costs %d KiB, want at most 100", per)
	}
	v, _ := rdb.Get(counterKey)
	t.Logf("visits counted meanwhile: %s", v)
}

// At the descriptor limit the app neither exits nor spins: the connections
// it cannot accept wait in the kernel's backlog, and are served once the
// slow clients holding its descriptors are closed by their timeouts.
func TestAtTheDescriptorLimitNothingSpinsAndEverythingRecovers(t *testing.T) {
	t.Parallel()
	// In CI a missing prlimit fails the test rather than skipping it.
	prlimit := envtest.LookPath(t, "prlimit", "util-linux")
	rdb := redistest.Start(t)
	const limit = 48
	p := startProcess(t, rdb.Addr(), prlimit, fmt.Sprintf("--nofile=%d:%d", limit, limit), "--")
	// One visit first, so that the app holds its Redis connection: at the
	// limit every descriptor it frees goes to a connection waiting in its
	// backlog, and a visit that had to dial Redis there would get 503
	// (it did once in CI, "socket: too many open files").
	if code, body := get(t, http.DefaultClient, p.url+"/"); code != http.StatusOK {
		t.Fatalf("GET / before the limit: %d %q", code, body)
	}
	// Twice the limit in silent connections: the app holds as many as it
	// has descriptors for, the rest wait in its backlog.
	for range 2 * limit {
		dialApp(t, p.url)
	}
	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		c := &http.Client{Timeout: 4 * idleTimeout}
		resp, err := c.Get(p.url + "/")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{code: resp.StatusCode, body: string(b)}
	}()
	cpu0 := p.cpu(t)
	time.Sleep(2 * time.Second)
	if spent := p.cpu(t) - cpu0; spent > 500*time.Millisecond {
		t.Errorf("the app spent %v of CPU in 2s at its descriptor limit: it spins", spent)
	}
	if !strings.Contains(p.stderr.String(), "waiting for a descriptor") {
		t.Errorf("the app did not reach its descriptor limit (or did not say so)")
	}
	select {
	case <-p.exited:
		t.Fatal("the app exited at its descriptor limit")
	case r := <-res:
		if r.err != nil || r.code != http.StatusOK {
			t.Fatalf("GET / at the descriptor limit: %d %q %v, want 200 once the silent clients are closed", r.code, r.body, r.err)
		}
	}
}

// metric reads one series without labels from the app's /metrics.
func metric(t *testing.T, url, name string) int64 {
	t.Helper()
	_, body := get(t, http.DefaultClient, url+"/metrics")
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int64(n)
		}
	}
	t.Fatalf("/metrics has no %s:\n%s", name, body)
	return 0
}

// The counter's invariant, with Redis stalled (SIGSTOP) under load and then
// resumed: an INCRBY sent before the stall is applied when Redis wakes, after
// its visits were answered 503, and is never sent twice. So visitorCount
// minus the 200 answers lies between 0 and the 503s whose INCRBY was sent,
// counter_visits_uncertain_total.
func TestCountStaysWithinItsInvariantWhenRedisStalls(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer c.CloseIdleConnections()

	var ok, unavailable atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				switch code, body := get(t, c, a.url+"/"); code {
				case http.StatusOK:
					ok.Add(1)
				case http.StatusServiceUnavailable:
					unavailable.Add(1)
				default:
					t.Errorf("GET / = %d %q", code, body)
					return
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	rdb.Pause()
	// Longer than the app's Redis timeout: the INCRBY in flight fails.
	time.Sleep(1500 * time.Millisecond)
	rdb.Resume()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	v, err := rdb.Get(counterKey)
	if err != nil {
		t.Fatal(err)
	}
	count, _ := strconv.ParseInt(v, 10, 64)
	uncertain := metric(t, a.url, "counter_visits_uncertain_total")
	t.Logf("visitorCount %d, 200 answers %d, 503 answers %d, of which uncertain %d", count, ok.Load(), unavailable.Load(), uncertain)
	if extra := count - ok.Load(); extra < 0 || extra > uncertain {
		t.Errorf("visitorCount - 200 answers = %d, want 0..%d (the uncertain 503s)", extra, uncertain)
	}
	if unavailable.Load() == 0 || uncertain == 0 {
		t.Errorf("the stall failed no INCRBY in flight (503s %d, uncertain %d): the test did not test", unavailable.Load(), uncertain)
	}
	if uncertain > unavailable.Load() {
		t.Errorf("uncertain %d > 503 answers %d", uncertain, unavailable.Load())
	}
}

// hostileClients opens n connections to the app at url, a third of each
// kind: heads trickled a byte a second, silent connections, and pipelines
// that are never read. Meanwhile a normal client asks GET / every 50 ms for
// the idle timeout and more, and each of its requests must be answered 200.
func hostileClients(t *testing.T, url string, n int) {
	t.Helper()
	req := "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
	burst := strings.Repeat(req, (64<<10)/len(req))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for i := range n {
		c := dialApp(t, url)
		switch i % 3 {
		case 0:
			wg.Go(func() {
				_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Second):
					}
					if _, err := c.Write([]byte("x")); err != nil {
						return
					}
				}
			})
		case 1:
		case 2:
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := io.WriteString(c, burst); err != nil {
						return
					}
				}
			})
		}
	}
	normal := &http.Client{Timeout: 2 * time.Second}
	defer normal.CloseIdleConnections()
	var answered int
	for end := time.Now().Add(idleTimeout + 3*time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		code, body := get(t, normal, url+"/")
		if code != http.StatusOK {
			t.Fatalf("a normal client among %d hostile ones: GET / = %d %q after %d answers", n, code, body, answered)
		}
		answered++
	}
	t.Logf("a normal client among %d hostile ones: %d of %d requests answered 200", n, answered, answered)
}

// One connection more than the app serves at once is answered 503 and
// closed, not left waiting; a connection within the limit is served.
func TestConnectionsBeyondTheLimitAreRefused(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	for range maxConns {
		dialApp(t, a.url)
	}
	c := dialApp(t, a.url)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("connection %d: no answer within 2s: %v", maxConns+1, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("connection %d: status %d, want 503", maxConns+1, resp.StatusCode)
	}
	if v, _ := rdb.Get(counterKey); v != "" {
		t.Errorf("%s = %q, want no visit counted", counterKey, v)
	}
}
