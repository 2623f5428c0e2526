package promquery

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"github.com/kodekloud/counter/internal/testsupport/envtest"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
	"github.com/kodekloud/counter/internal/testsupport/promtest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

// app is the counter app run as a process on a port of its own.
type app struct {
	t    *testing.T
	bin  string
	addr string
	env  []string
	cmd  *exec.Cmd
	done chan struct{}
}

func startApp(t *testing.T, bin string, redis *redistest.Server) *app {
	t.Helper()
	a := &app{t: t, bin: bin, addr: "127.0.0.1:" + strconv.Itoa(envtest.FreePort(t)),
		env: []string{"HOST=" + redis.Host, "PORT=" + strconv.Itoa(redis.Port)}}
	a.start()
	t.Cleanup(a.stop)
	return a
}

func (a *app) start() {
	a.t.Helper()
	a.cmd = exec.Command(a.bin)
	a.cmd.Env = append(a.env, "LISTEN_ADDR="+a.addr)
	a.cmd.Stderr = io.Discard
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(a.cmd, a.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if resp, err := http.Get("http://" + a.addr + "/healthz"); err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("app on %s: no /healthz after 10s", a.addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop kills the process, as a crash would: its counters are gone.
func (a *app) stop() {
	if a.cmd != nil {
		_ = a.cmd.Process.Kill()
		<-a.done
		a.cmd = nil
	}
}

// get sends n GET / and returns how many answered 5xx.
func (a *app) get(n int) (errors int) {
	a.t.Helper()
	for range n {
		resp, err := http.Get("http://" + a.addr + "/")
		if err != nil {
			a.t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			errors++
		}
	}
	return errors
}

// scrapedAfter waits until Prometheus has scraped every target after t.
func scrapedAfter(t *testing.T, api v1.API, after time.Time, targets int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := api.Targets(context.Background())
		n := 0
		if err == nil {
			for _, tg := range res.Active {
				if tg.LastScrape.After(after) {
					n++
				}
			}
		}
		if n >= targets {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus scraped %d of %d targets after %s in 30s (%v)", n, targets, after.Format(time.StampMilli), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestReadCountsWhatTheAppsServed runs the app twice, a "canary" and a
// "stable" instance, each against a Redis of its own, scraped by a real
// Prometheus that labels them as the stack labels allocations. The counts
// Read gives for the window must be what the client saw: not the requests
// before the start, the 503s of the canary whose Redis is down, and across
// the canary's crash and restart (its counters begin again at 0).
func TestReadCountsWhatTheAppsServed(t *testing.T) {
	envtest.NeedsServers(t, "Prometheus, redis-server and the app")
	bin := filepath.Join(t.TempDir(), "app")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	build.Dir = filepath.Join(imagetest.RepoRoot(t), "app")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./app: %v\n%s", err, out)
	}
	stableRedis, canaryRedis := redistest.Start(t), redistest.Start(t)
	stable, can := startApp(t, bin, stableRedis), startApp(t, bin, canaryRedis)
	const stableID, canaryID = "5ab1e000-0000-4000-8000-000000000001", "ca000000-0000-4000-8000-000000000002"
	prom := promtest.Start(t,
		promtest.StaticTarget("stable", stable.addr, map[string]string{"alloc": stableID, "service": "counter-test", "canary": "false"})+
			promtest.StaticTarget("canary", can.addr, map[string]string{"alloc": canaryID, "service": "counter-test", "canary": "true"}))
	src, err := New(prom.Addr)
	if err != nil {
		t.Fatal(err)
	}
	api := src.API.(v1.API)

	// Before the window: served, scraped, and not to be counted.
	stable.get(17)
	can.get(9)
	scrapedAfter(t, api, time.Now(), 2)
	start := time.Now()

	var canaryN, canaryErr, stableN int
	stableN += 40
	stable.get(40)
	canaryN += 20
	canaryErr += can.get(20)
	canaryRedis.Stop()
	canaryN += 7
	canaryErr += can.get(7) // 503: the canary cannot reach its Redis
	// Scraped before the crash: what a process served after its last
	// scrape dies with it, for every reader of Prometheus.
	scrapedAfter(t, api, time.Now(), 2)
	can.stop()
	can.start()
	canaryN += 3
	canaryErr += can.get(3)
	canaryRedis.Restart()
	canaryN += 5
	canaryErr += can.get(5)
	scrapedAfter(t, api, time.Now(), 2)
	end := time.Now()
	if canaryErr != 10 {
		t.Fatalf("the client saw %d canary 5xx, want 10: the test's Redis outage did not work", canaryErr)
	}

	r, err := src.Read(context.Background(), Allocs{Canary: []string{canaryID}, Stable: []string{stableID}}, start, end, true)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("canary %d of %d, stable %d of %d", r.Window.Canary.Errors, r.Window.Canary.Requests, r.Window.Stable.Errors, r.Window.Stable.Requests)
	want := fmt.Sprintf("canary %d of %d, stable %d of %d", canaryErr, canaryN, 0, stableN)
	if got != want {
		t.Errorf("Read = %s, want what the client saw: %s (resets %v)", got, want, r.Resets)
	}
	if r.Resets[canaryID] == 0 {
		t.Errorf("no reset seen for the restarted canary: %v", r.Resets)
	}
	for side, h := range map[string]struct {
		counts []int64
		n      int
	}{"canary": {r.Window.CanaryLatency.Counts, canaryN}, "stable": {r.Window.StableLatency.Counts, stableN}} {
		if len(h.counts) == 0 || h.counts[len(h.counts)-1] != int64(h.n) {
			t.Errorf("%s's latency histogram %v: want %d requests in its +Inf bucket", side, h.counts, h.n)
		}
	}

	t.Run("refuses/an allocation Prometheus does not scrape", func(t *testing.T) {
		_, err := src.Read(context.Background(), Allocs{Canary: []string{canaryID, "no-such-alloc"}, Stable: []string{stableID}}, start, end, false)
		if err == nil || !strings.Contains(err.Error(), "of allocation no-such-alloc") {
			t.Fatalf("Read = %v; want an error naming no-such-alloc", err)
		}
	})
	t.Run("refuses/a canary whose scrapes stopped", func(t *testing.T) {
		can.stop()
		down := time.Now()
		src.MaxAge = 2 * time.Second
		scrapedAfter(t, api, down.Add(src.MaxAge+time.Second), 2)
		_, err := src.Read(context.Background(), Allocs{Canary: []string{canaryID}, Stable: []string{stableID}}, start, time.Now(), false)
		if err == nil || !strings.Contains(err.Error(), "last scraped canary allocation "+canaryID) {
			t.Fatalf("Read = %v; want an error: the canary is no longer scraped", err)
		}
	})
}
