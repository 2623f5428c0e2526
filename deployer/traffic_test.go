package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/welcome"
)

// load is a client of the service as a real one finds it: through Consul's
// list of passing instances, polled every 50 ms as the issue measured it,
// reading every answer.
type load struct {
	t       *testing.T
	mu      sync.Mutex
	ok      int    // 200 answers
	failed  []miss // what went wrong, for the report
	empty   int    // polls that found no passing instance
	stop    context.CancelFunc
	done    chan struct{}
	counted map[int64]bool // counts seen: no two answers may share one
	// cutShort says which limit ended the load before it was halted, ""
	// if none did; reported once it is.
	cutShort string
	reported bool
}

// Limits of one load, so that a test that forgets to halt it cannot run it
// on forever; a load that reaches one fails its test, since what happened
// after went unobserved.
const (
	loadFor         = 5 * time.Minute
	loadMaxRequests = 100000
	loadPoll        = 50 * time.Millisecond
)

// startLoad sends requests to the fixture's job until halted, failing the
// test if it reaches loadFor or loadMaxRequests first.
func (f *fixture) startLoad(t *testing.T) *load {
	t.Helper()
	l, ctx, client := newLoad(t)
	go func() {
		defer close(l.done)
		var urls []string
		refreshed := time.Time{}
		i := 0
		defer func() {
			// Canceled is a halt; anything else is a limit.
			why := ""
			switch {
			case errors.Is(ctx.Err(), context.DeadlineExceeded):
				why = fmt.Sprintf("it ran for its limit of %s", loadFor)
			case ctx.Err() == nil && i >= loadMaxRequests:
				why = fmt.Sprintf("it sent its limit of %d requests", loadMaxRequests)
			}
			l.mu.Lock()
			l.cutShort = why
			l.mu.Unlock()
		}()
		for i < loadMaxRequests && ctx.Err() == nil {
			if time.Since(refreshed) >= loadPoll {
				entries, _, err := f.kv.Health().Service(f.job, "", true, nil)
				if err == nil {
					urls = urls[:0]
					for _, e := range entries {
						urls = append(urls, fmt.Sprintf("http://%s:%d/", e.Service.Address, e.Service.Port))
					}
					if len(urls) == 0 {
						l.mu.Lock()
						l.empty++
						l.mu.Unlock()
					}
				}
				refreshed = time.Now()
			}
			if len(urls) == 0 {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			l.get(client, urls[i%len(urls)])
			i++
			time.Sleep(2 * time.Millisecond)
		}
	}()
	t.Cleanup(l.halt)
	return l
}

// miss is a request of the load that got no count.
type miss struct {
	at  time.Time // when it was sent
	url string
	err string
}

func (m miss) String() string { return "GET " + m.url + ": " + m.err }

func (l *load) get(c *http.Client, url string) {
	at := time.Now()
	res, err := c.Get(url)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err != nil:
		l.failed = append(l.failed, miss{at, url, err.Error()})
	case res.StatusCode != http.StatusOK:
		l.failed = append(l.failed, miss{at, url, fmt.Sprintf("%s: %s", res.Status, body)})
	default:
		n, err := welcome.Parse(string(body))
		if err != nil || l.counted[n] {
			l.failed = append(l.failed, miss{at, url, fmt.Sprintf("answer %q (repeated or not a count)", body)})
			return
		}
		l.counted[n] = true
		l.ok++
	}
}

// snapshot returns what the load saw so far.
func (l *load) snapshot() (ok, empty int, failed []miss) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, l.empty, append([]miss(nil), l.failed...)
}

// halt stops the load and waits for its last request. A load that had
// already ended at one of its limits fails the test: what followed went
// unobserved.
func (l *load) halt() {
	l.stop()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cutShort != "" && !l.reported {
		l.reported = true
		l.t.Errorf("the load ended before it was halted: %s, so what followed went unobserved", l.cutShort)
	}
}

// TestTrafficSurvivesGoodAndBadReleases runs a client through a good release
// and then four bad ones. The old instance serves until its replacement
// passes its checks, so the client never finds the passing list empty and
// never gets a failed answer; each bad release fails within seconds naming
// its cause, and Redis counted exactly the answers the client got.
func TestTrafficSurvivesGoodAndBadReleases(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, bad := releaseImages(t, f.stack)
	// v0 counts in a Redis of its own, so that its snapshot is its alone.
	rdb0, rdb := redistest.Start(t), redistest.Start(t)
	const update = "min_healthy_time = \"1s\"\nhealthy_deadline = \"10s\"\nprogress_deadline = \"20s\""
	f.writeEnv("dev", rdb0, 1, update)
	first, code, _ := submitJSON(t, f, "-env", "dev", "-image", good)
	if code != exitOK {
		t.Fatalf("first release: exit %d %+v", code, first)
	}
	l := f.startLoad(t)
	waitFor(t, 30*time.Second, "the load's first answers", func() bool { ok, _, _ := l.snapshot(); return ok > 0 })

	// A good release: another build of the same code, counting in rdb from
	// a million on, so that no answer repeats one of rdb0's.
	const offset = 1000000
	if err := rdb.Set("visitorCount", strconv.Itoa(offset)); err != nil {
		t.Fatal(err)
	}
	f.writeEnv("dev", rdb, 1, update)
	if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", imageVariant(t, f.stack, 1)); code != exitOK || rec.Outcome != deploy.Succeeded {
		t.Fatalf("good release: exit %d %+v", code, rec)
	}
	if ok, empty, failed := l.snapshot(); empty > 0 || len(failed) > 0 {
		t.Errorf("through a good release: %d answers, the passing list empty %d times, %d failed: %q", ok, empty, len(failed), failed)
	}
	running := "v1"

	closed := redistest.Start(t)
	closed.Stop()
	tests := []struct {
		name    string
		prepare func(t *testing.T) (args []string)
		want    string // in the failure's causes: task events or stderr
	}{
		{"a Redis port nothing listens on", func(t *testing.T) []string {
			f.writeEnv("dev", closed, 1, update)
			return []string{"-image", good}
		}, "connect: connection refused"},
		{"a binary that exits", func(t *testing.T) []string {
			f.writeEnv("dev", rdb, 1, update)
			return []string{"-image", bad}
		}, `unexpected arguments ["not-an-argument"]`},
		{"a registry that does not answer", func(t *testing.T) []string {
			f.writeEnv("dev", rdb, 1, update)
			return []string{"-image", closedAddr(t) + "/counter:v1"}
		}, "Driver Failure: Failed to pull"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-env", "dev", "-wait", "1m"}, tt.prepare(t)...)
			start := time.Now()
			rec, code, stderr := submitJSON(t, f, args...)
			took := time.Since(start)
			if code != exitAutoReverted || rec.RevertedToRelease != running {
				t.Errorf("exit %d, reverted to %q; want %d and back to %s\n%s", code, rec.RevertedToRelease, exitAutoReverted, running, stderr)
			}
			if took > 90*time.Second {
				t.Errorf("the bad release took %s to fail, want well under 2 minutes", took.Round(time.Second))
			}
			if len(rec.Causes) == 0 || !strings.Contains(fmt.Sprint(rec.Causes), tt.want) {
				t.Errorf("causes %+v, want them to show %q", rec.Causes, tt.want)
			}
			t.Logf("failed and reverted in %s; cause: %v", took.Round(100*time.Millisecond), rec.Causes)
		})
	}

	// nomad job revert to a release whose snapshot is gone: the template
	// never renders, the canary never turns healthy, and Nomad reverts it.
	t.Run("nomad job revert to a deleted snapshot", func(t *testing.T) {
		if _, err := f.kv.KV().DeleteTree(first.ConfigPath+"/", nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "the last deployment to end", func() bool {
			dep, _, err := f.nomad.Jobs().LatestDeployment(f.job, nil)
			return err == nil && dep != nil && dep.Status != "running" && dep.Status != "pending"
		})
		revert := *f.versions()[0].Version + 1
		if _, code := f.nomadCLI("job", "revert", "-detach", f.job, "v0"); code != 0 {
			t.Fatalf("nomad job revert: exit %d", code)
		}
		if dep := f.waitForDeployment(revert, 90*time.Second); dep.Status != "failed" {
			t.Errorf("the revert to a deleted snapshot: deployment %s, want failed", dep.Status)
		} else {
			t.Logf("the revert's deployment failed: %s", dep.StatusDescription)
		}
	})

	// The client ran throughout; then Redis must hold exactly its answers.
	time.Sleep(500 * time.Millisecond)
	l.halt()
	ok, empty, failed := l.snapshot()
	counted := -offset
	for _, r := range []*redistest.Server{rdb0, rdb} {
		v, _ := r.Get("visitorCount")
		n, _ := strconv.Atoi(v)
		counted += n
	}
	t.Logf("load: %d answers, the passing list empty %d times, %d failed; the Redis counters add up to %d", ok, empty, len(failed), counted)
	if len(failed) > 0 || empty > 0 {
		t.Errorf("%d failed requests, the passing list empty %d times: %q", len(failed), empty, failed)
	}
	if counted != ok {
		t.Errorf("Redis counted %d, the client got %d answers", counted, ok)
	}
}

// waitFor polls cond every 200 ms until it holds, failing the test after
// within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
