package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/welcome"
)

// TestMain lets a test run this test binary as the real app process, to see
// its exit code and stderr exactly as a user would.
func TestMain(m *testing.M) {
	if os.Getenv("COUNTER_APP_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "counter-app-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	appBuildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// appBuildDir is where appBinary builds the app, removed after the tests.
var appBuildDir string

// app is one run of the service inside the test process.
type app struct {
	url    string
	stop   context.CancelFunc
	done   chan error
	stderr *syncBuffer
}

// startApp runs the app against redisAddr on a port the kernel picks, and
// waits for /healthz.
func startApp(t *testing.T, redisAddr string) *app {
	t.Helper()
	host, port, _ := net.SplitHostPort(redisAddr)
	env := map[string]string{"HOST": host, "PORT": port, "LISTEN_ADDR": "127.0.0.1:0"}
	ctx, cancel := context.WithCancel(context.Background())
	a := &app{stop: cancel, done: make(chan error, 1), stderr: new(syncBuffer)}
	go func() {
		a.done <- run(ctx, []string{"app"}, func(k string) string { return env[k] }, io.Discard, a.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		<-a.done
		if t.Failed() {
			t.Logf("app log:\n%s", a.stderr)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for {
		if a.url == "" {
			if addr, ok := listeningAddr(a.stderr.String()); ok {
				a.url = "http://" + addr
			}
		}
		if a.url != "" {
			var resp *http.Response
			if resp, err = http.Get(a.url + "/healthz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return a
				}
			}
		}
		select {
		case err := <-a.done:
			t.Fatalf("app exited at start: %v\n%s", err, a.stderr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("app not healthy after 10s: %v\n%s", err, a.stderr)
		}
	}
}

// listeningAddr finds the address in the app's "listening" log line, which
// names the port the kernel picked for LISTEN_ADDR=...:0.
func listeningAddr(log string) (string, bool) {
	for _, line := range strings.Split(log, "\n") {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" && rec.Addr != "" {
			return rec.Addr, true
		}
	}
	return "", false
}

// get fetches path and returns the status code and body.
func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("read %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// parseCount returns N from the seed's answer, failing on any other text.
func parseCount(t *testing.T, body string) int64 {
	t.Helper()
	n, err := welcome.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCountAnswersSeedTextWithStrictlyIncreasingCounts(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	if err := rdb.Set(counterKey, "8"); err != nil {
		t.Fatal(err)
	}
	a := startApp(t, rdb.Addr())

	resp, err := http.Get(a.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got, want := string(body), "Welcome to KODEKLOUD! Visitor Count: 9"; got != want {
		t.Fatalf("GET / = %q, want the seed's %q", got, want)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain", ct)
	}

	last := int64(9)
	for range 20 {
		code, body := get(t, http.DefaultClient, a.url+"/")
		if code != http.StatusOK {
			t.Fatalf("GET / = %d %q", code, body)
		}
		n := parseCount(t, body)
		if n != last+1 {
			t.Fatalf("count went %d -> %d, want %d", last, n, last+1)
		}
		last = n
	}
	if v, _ := rdb.Get(counterKey); v != strconv.FormatInt(last, 10) {
		t.Errorf("redis %s = %q, want %d", counterKey, v, last)
	}
}

func TestConcurrentRequestsGetDistinctCounts(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	const requests = 1000
	c := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: requests, MaxConnsPerHost: 0},
	}
	defer c.CloseIdleConnections()

	counts := make([]int64, requests)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range requests {
		wg.Go(func() {
			<-start
			code, body := get(t, c, a.url+"/")
			if code != http.StatusOK {
				t.Errorf("GET / = %d %q", code, body)
				return
			}
			counts[i] = parseCount(t, body)
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := make(map[int64]bool, requests)
	for _, n := range counts {
		if seen[n] {
			t.Fatalf("count %d was answered twice", n)
		}
		if n < 1 || n > requests {
			t.Fatalf("count %d outside 1..%d", n, requests)
		}
		seen[n] = true
	}
	if v, _ := rdb.Get(counterKey); v != strconv.Itoa(requests) {
		t.Errorf("redis %s = %q after %d requests, want %d", counterKey, v, requests, requests)
	}
}

func TestRedisOutageAnswers503AndRecoversWithoutRestart(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	c := &http.Client{Timeout: 10 * time.Second}

	if code, body := get(t, c, a.url+"/"); code != http.StatusOK || parseCount(t, body) != 1 {
		t.Fatalf("before the outage: GET / = %d %q", code, body)
	}
	baseline := runtime.NumGoroutine()

	rdb.Stop()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if code, body := get(t, c, a.url+"/"); code != http.StatusServiceUnavailable {
				t.Errorf("Redis down: GET / = %d %q, want 503", code, body)
			}
		})
	}
	wg.Wait()
	if code, _ := get(t, c, a.url+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("Redis down: /readyz = %d, want 503", code)
	}
	if code, _ := get(t, c, a.url+"/healthz"); code != http.StatusOK {
		t.Errorf("Redis down: /healthz = %d, want 200 (the process is alive)", code)
	}
	if !strings.Contains(a.stderr.String(), `"msg":"redis INCRBY failed"`) {
		t.Errorf("the outage was not logged:\n%s", a.stderr)
	}

	rdb.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, c, a.url+"/")
		if code == http.StatusOK {
			// The restarted Redis starts empty.
			if n := parseCount(t, body); n != 1 {
				t.Errorf("after restart: count %d, want 1", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("app did not recover within 10s of Redis restarting: last %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _ := get(t, c, a.url+"/readyz"); code != http.StatusOK {
		t.Errorf("after restart: /readyz = %d, want 200", code)
	}

	// The failed requests must not leave goroutines behind. Idle keep-alive
	// connections hold two each, so close them before counting.
	c.CloseIdleConnections()
	deadline = time.Now().Add(5 * time.Second)
	for n := runtime.NumGoroutine(); n > baseline+10; n = runtime.NumGoroutine() {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after the outage, %d before", n, baseline)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialApp opens a raw connection to the app at url, closed when the test
// ends, with 10s for everything on it: the test's guard against hanging.
func dialApp(t *testing.T, url string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// getOwn sends GET / on a connection of its own.
func getOwn(t *testing.T, url string) (int, string) {
	t.Helper()
	c := dialApp(t, url)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// The count's Redis connections outlive requests. A Redis that restarted
// while the app sat idle has closed them; the next visit must still be
// counted, not fail on the dead connection.
func TestCountAfterIdleRedisRestart(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	if code, body := getOwn(t, a.url); code != http.StatusOK || parseCount(t, body) != 1 {
		t.Fatalf("before the restart: GET / = %d %q", code, body)
	}
	rdb.Stop()
	rdb.Restart()
	// A pause between visits, long enough for Redis's close to arrive.
	time.Sleep(200 * time.Millisecond)
	// The restarted Redis starts empty.
	if code, body := getOwn(t, a.url); code != http.StatusOK || parseCount(t, body) != 1 {
		t.Fatalf("first visit after the restart: GET / = %d %q, want 200 and count 1", code, body)
	}
}

// An error reply is Redis's own answer: it fails the visits of its batch with
// Redis's words in the log, and the next batch goes out on the same
// connection.
func TestRedisErrorReplyAnswers503AndKeepsTheConnection(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	if code, body := getOwn(t, a.url); code != http.StatusOK {
		t.Fatalf("GET / = %d %q", code, body)
	}
	// Each INFO, GET and SET of the test is a connection of its own.
	conns := func() int {
		t.Helper()
		v, err := rdb.Info("stats")
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(v) {
			if n, ok := strings.CutPrefix(strings.TrimSpace(line), "total_connections_received:"); ok {
				i, err := strconv.Atoi(n)
				if err != nil {
					t.Fatal(err)
				}
				return i
			}
		}
		t.Fatalf("INFO stats has no total_connections_received:\n%s", v)
		return 0
	}
	before := conns()

	if err := rdb.Set(counterKey, "not a number"); err != nil {
		t.Fatal(err)
	}
	if code, body := getOwn(t, a.url); code != http.StatusServiceUnavailable {
		t.Fatalf("counter not a number: GET / = %d %q, want 503", code, body)
	}
	if want := "value is not an integer"; !strings.Contains(a.stderr.String(), want) {
		t.Errorf("the log lacks Redis's reply %q:\n%s", want, a.stderr)
	}
	if err := rdb.Set(counterKey, "41"); err != nil {
		t.Fatal(err)
	}
	if code, body := getOwn(t, a.url); code != http.StatusOK || parseCount(t, body) != 42 {
		t.Fatalf("counter repaired: GET / = %d %q, want 200 and count 42", code, body)
	}
	// Since the first INFO: two SETs and this INFO.
	if n := conns() - before; n != 3 {
		t.Errorf("Redis accepted %d connections, want 3 (the test's own): the app dialled again after an error reply", n)
	}
}

func TestSlowRedisAnswers503WithinTimeout(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	p := startProxy(t, rdb.Addr())
	a := startApp(t, p.addr())
	c := &http.Client{Timeout: 10 * time.Second}

	if code, body := get(t, c, a.url+"/"); code != http.StatusOK {
		t.Fatalf("GET / = %d %q", code, body)
	}
	p.hold() // Redis now never answers.
	start := time.Now()
	code, body := get(t, c, a.url+"/")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("Redis stalled: GET / = %d %q, want 503", code, body)
	}
	// The bound is the app's own Redis timeout; the client's 10s is the
	// test's guard against hanging forever.
	t.Logf("503 after %v", time.Since(start).Round(time.Millisecond))
	p.release()
}

func TestShutdownFinishesInFlightRequest(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	p := startProxy(t, rdb.Addr())
	a := startApp(t, p.addr())
	c := &http.Client{Timeout: 10 * time.Second}
	if code, body := get(t, c, a.url+"/"); code != http.StatusOK {
		t.Fatalf("GET / = %d %q", code, body)
	}

	held := p.hold()
	type result struct {
		code int
		body string
	}
	res := make(chan result, 1)
	go func() {
		code, body := get(t, c, a.url+"/")
		res <- result{code, body}
	}()
	<-held // The request's INCR is on its way to Redis: it is in flight.

	a.stop() // What SIGTERM does in main.
	// Shutdown closes the listener first; once connections are refused it
	// is waiting on the in-flight request.
	for {
		conn, err := net.DialTimeout("tcp", strings.TrimPrefix(a.url, "http://"), time.Second)
		if err != nil {
			break
		}
		conn.Close()
		time.Sleep(5 * time.Millisecond)
	}
	p.release()

	r := <-res
	if r.code != http.StatusOK || parseCount(t, r.body) != 2 {
		t.Errorf("in-flight request during shutdown: %d %q, want 200 with count 2", r.code, r.body)
	}
	select {
	case err := <-a.done:
		a.done <- err // for the cleanup
		if err != nil {
			t.Errorf("run returned %v after shutdown, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return within 15s of shutdown")
	}
}

func TestBadRedisAddressStopsAtStart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, host, port string
		want             string
	}{
		{"rejects/empty HOST", "", "6379", "HOST is empty"},
		{"rejects/empty PORT", "redis", "", "PORT is empty"},
		{"rejects/PORT not a number", "redis", "six", `PORT="six" is not a number`},
		{"rejects/PORT zero", "redis", "0", `PORT="0" is out of range`},
		{"rejects/PORT above 65535", "redis", "65536", `PORT="65536" is out of range`},
		{"rejects/negative PORT", "redis", "-1", `PORT="-1" is out of range`},
		{"rejects/PORT with spaces", "redis", " 6379", `PORT=" 6379" is not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"HOST": tt.host, "PORT": tt.port, "LISTEN_ADDR": "127.0.0.1:0"}
			var stderr bytes.Buffer
			err := run(context.Background(), []string{"app"}, func(k string) string { return env[k] }, io.Discard, &stderr)
			if err == nil {
				t.Fatal("run accepted the configuration")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line containing %q", err, tt.want)
			}
		})
	}

	t.Run("the process exits 1 with one line on stderr", func(t *testing.T) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(withoutNomad(os.Environ()), "COUNTER_APP_TEST_MAIN=1", "HOST=redis", "PORT=http")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 {
			t.Fatalf("exit: %v, want exit status 1", err)
		}
		want := "app: PORT=\"http\" is not a number: set it to the Redis port (1-65535)\n"
		if stderr.String() != want || stdout.Len() != 0 {
			t.Errorf("stderr %q stdout %q, want stderr %q", stderr.String(), stdout.String(), want)
		}
	})

	// Under Nomad the complaint must be out while the container still
	// runs, long enough for Nomad's log copier to have attached; a SIGTERM
	// meanwhile ends the wait, and the exit status stays 1.
	delay := failedExitDelay(startError{errors.New("x")}, func(string) string { return "x" })
	for _, sigterm := range []bool{false, true} {
		t.Run(fmt.Sprintf("under Nomad it says why, then waits before it exits (SIGTERM meanwhile: %t)", sigterm), func(t *testing.T) {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(withoutNomad(os.Environ()), "COUNTER_APP_TEST_MAIN=1", "HOST=redis", "PORT=http", "NOMAD_ALLOC_ID=test")
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(stderr)
			line, _ := r.ReadString('\n')
			said := time.Now()
			if sigterm {
				cmd.Process.Signal(syscall.SIGTERM)
			}
			rest, _ := io.ReadAll(r)
			err = cmd.Wait()
			waited := time.Since(said)
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v, want exit status 1", err)
			}
			if !strings.HasPrefix(line, "app: PORT=") || len(rest) != 0 {
				t.Errorf("stderr %q, want the complaint alone", line+string(rest))
			}
			if waited < delay-100*time.Millisecond && !sigterm {
				t.Errorf("exited %v after its complaint, want about %v", waited, delay)
			}
			if waited >= delay && sigterm {
				t.Errorf("exited %v after its complaint and a SIGTERM, want at once", waited)
			}
		})
	}
}

// withoutNomad is env without the variable by which the app knows it runs
// under Nomad, so that a test run inside a Nomad task tests what it means to.
func withoutNomad(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "NOMAD_ALLOC_ID=") })
}

func TestFailedExitDelay(t *testing.T) {
	nomadEnv := map[string]string{"NOMAD_ALLOC_ID": "741188f3-7245-3d7e-cd6d-5c0f1e7fad6c"}
	tests := []struct {
		name  string
		err   error
		env   map[string]string
		delay bool
	}{
		{"a failed start run by hand", startError{errors.New("PORT is empty")}, nil, false},
		{"a failed start under Nomad", startError{errors.New("PORT is empty")}, nomadEnv, true},
		{"a failed start, wrapped, under Nomad", fmt.Errorf("app: %w", startError{errors.New("PORT is empty")}), nomadEnv, true},
		{"a failure after serving, under Nomad", errors.New("shutdown: context deadline exceeded"), nomadEnv, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := failedExitDelay(tt.err, func(k string) string { return tt.env[k] })
			if (d > 0) != tt.delay {
				t.Errorf("delay %v, want a delay: %v", d, tt.delay)
			}
		})
	}
}

func TestMetricsCountRequestsAndRedisErrors(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	c := &http.Client{Timeout: 10 * time.Second}
	for range 3 {
		get(t, c, a.url+"/")
	}
	rdb.Stop()
	get(t, c, a.url+"/")
	_, body := get(t, c, a.url+"/metrics")
	for _, want := range []string{
		`counter_http_requests_total{code="200",route="/"} 3`,
		`counter_http_requests_total{code="503",route="/"} 1`,
		`counter_redis_errors_total 1`,
		`counter_http_request_duration_seconds_count{route="/"} 4`,
		// Redis refused the connection: the INCRBY was never sent.
		`counter_visits_uncertain_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// syncBuffer is a bytes.Buffer safe for the app's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRoutesAnswerOnlyTheirMethods(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	c := &http.Client{Timeout: 10 * time.Second}
	tests := []struct {
		method, path string
		code         int
		allow        string
	}{
		{"GET", "/healthz", 200, ""},
		{"HEAD", "/healthz", 200, ""},
		{"HEAD", "/readyz", 200, ""},
		{"GET", "/metrics", 200, ""},
		{"POST", "/", 405, "GET"},
		{"HEAD", "/", 405, "GET"},
		{"DELETE", "/healthz", 405, "GET, HEAD"},
		{"GET", "/favicon.ico", 404, ""},
		{"GET", "/healthz/", 404, ""},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, a.url+tt.path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", tt.method, tt.path, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != tt.code || resp.Header.Get("Allow") != tt.allow {
			t.Errorf("%s %s = %d, Allow %q; want %d, Allow %q", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Allow"), tt.code, tt.allow)
		}
	}
	// Only GET / counts.
	if v, _ := rdb.Get(counterKey); v != "" {
		t.Errorf("redis %s = %q after no GET /, want it unset", counterKey, v)
	}
}
