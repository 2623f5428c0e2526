package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/envtest"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// startURLLoad is startLoad through one address, the environment's URL,
// as its users call it: no list of instances, one request after another
// (5 ms apart), every answer read, within the same limits.
func startURLLoad(t *testing.T, url string) *load {
	t.Helper()
	l, ctx, client := newLoad(t)
	go func() {
		defer close(l.done)
		i := 0
		for ; i < loadMaxRequests && ctx.Err() == nil; i++ {
			l.get(client, url)
			time.Sleep(5 * time.Millisecond)
		}
		why := ""
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			why = fmt.Sprintf("it ran for its limit of %s", loadFor)
		case ctx.Err() == nil:
			why = fmt.Sprintf("it sent its limit of %d requests", loadMaxRequests)
		}
		l.mu.Lock()
		l.cutShort = why
		l.mu.Unlock()
	}()
	t.Cleanup(l.halt)
	return l
}

// newLoad is a load not yet sending, the context that bounds it to loadFor
// (its halt cancels it) and its HTTP client.
func newLoad(t *testing.T) (*load, context.Context, *http.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), loadFor)
	l := &load{t: t, stop: cancel, done: make(chan struct{}), counted: map[int64]bool{}}
	return l, ctx, &http.Client{Timeout: 3 * time.Second}
}

// frontDoorFixture is a fixture on a stack of the test's own whose front
// door serves dev, a job named after prefix, at a free port's URL; opts
// change the stack (stacktest.Cluster).
func frontDoorFixture(t *testing.T, prefix string, opts ...stacktest.Option) (*fixture, *localstack.Stack, string) {
	t.Helper()
	envtest.NeedsServers(t, "a stack of its own with a front door")
	job := stacktest.Name(t, prefix)
	url := "http://" + closedAddr(t) + "/"
	// The stack's front door is made from an environment file that names
	// the job and the URL, as make up makes dev's.
	doors := t.TempDir()
	src := fmt.Sprintf("job = %q\nurl = %q\ndatacenters = [\"dc1\"]\nconfig {\n  HOST = \"127.0.0.1\"\n  PORT = 6379\n}\n", job, url)
	if err := os.WriteFile(filepath.Join(doors, "dev.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	s := stacktest.StartOwnFrontDoor(t, doors, opts...)
	f := fixtureOf(t, s, job)
	stacktest.GrantJob(t, s, job)
	f.url = url
	return f, s, url
}

// TestFrontDoorKeepsTheURL is what users of an environment see through its
// front door, the URL its file names: the same URL answers across five
// releases, a failed one, deployer rollback, nomad job revert and an
// instance killed (SIGKILL) under load, with no failed request and the
// counter equal to the answers, or one more (HAProxy resends a request
// the killed instance was answering, which it may have counted); each
// command names the URL and saw it answer; and after the stack is stopped
// and started again (make down, make up) the same URL answers again.
func TestFrontDoorKeepsTheURL(t *testing.T) {
	t.Parallel()
	f, s, url := frontDoorFixture(t, "door")
	good, bad := releaseImages(t, s)
	rdb := redistest.Start(t)
	// Two instances: one serves while the other is replaced or killed.
	const update = "min_healthy_time = \"1s\"\nhealthy_deadline = \"10s\"\nprogress_deadline = \"20s\""
	f.writeEnv("dev", rdb, 2, update)

	// wantURL checks what a command says of the URL: it names it, and,
	// after a release that runs, saw it answer.
	wantURL := func(what string, rec deploy.Record, answered bool) {
		t.Helper()
		if rec.URL != url {
			t.Errorf("%s: the record's url is %q, want %q", what, rec.URL, url)
		}
		if answered && !strings.HasPrefix(rec.URLCheck, "answered 200") {
			t.Errorf("%s: url_check %q, want the URL to have answered", what, rec.URLCheck)
		}
	}
	rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good)
	if code != exitOK {
		t.Fatalf("first release: exit %d %+v\n%s", code, rec, stderr)
	}
	wantURL("the first release", rec, true)

	l := startURLLoad(t, url)
	waitFor(t, 30*time.Second, "answer through the front door", func() bool { ok, _, _ := l.snapshot(); return ok > 0 })
	for n := 1; n <= 4; n++ {
		rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", imageVariant(t, s, n))
		if code != exitOK || rec.Outcome != deploy.Succeeded {
			t.Fatalf("release %d: exit %d %+v\n%s", n+1, code, rec, stderr)
		}
		wantURL(rec.Release, rec, true)
	}
	rec, code, stderr = submitJSON(t, f, "-env", "dev", "-wait", "1m", "-image", bad)
	if code != exitAutoReverted {
		t.Fatalf("the bad release: exit %d, want %d (auto-reverted) %+v\n%s", code, exitAutoReverted, rec, stderr)
	}
	wantURL("the failed release", rec, false)
	rec, code, stderr = f.rollbackJSON("-to", "v2", "-wait", "1m")
	if code != exitOK || rec.Outcome != deploy.Succeeded {
		t.Fatalf("rollback -to v2: exit %d %+v\n%s", code, rec, stderr)
	}
	wantURL("deployer rollback", rec, true)
	revert := *f.versions()[0].Version + 1
	if _, code := f.nomadCLI("job", "revert", "-detach", f.job, "v3"); code != 0 {
		t.Fatalf("nomad job revert %s v3: exit %d", f.job, code)
	}
	if dep := f.waitForDeployment(revert, 90*time.Second); dep.Status != "successful" {
		t.Fatalf("nomad job revert's deployment: %s (%s)", dep.Status, dep.StatusDescription)
	}

	// An instance dies at once (SIGKILL): Consul still lists it for
	// seconds, the front door's own check takes it out, and the requests
	// it refuses meanwhile go to the other instance.
	killed, err := imagetest.Docker("ps", "-q", "--filter", "label=com.hashicorp.nomad.job_name="+f.job)
	if ids := strings.Fields(killed); err != nil || len(ids) == 0 {
		t.Fatalf("the job's containers: %q %v", killed, err)
	} else if _, err := imagetest.Docker("kill", ids[0]); err != nil {
		t.Fatal(err)
	}
	before, _, _ := l.snapshot()
	waitFor(t, 30*time.Second, "200 answers more after the kill", func() bool { ok, _, _ := l.snapshot(); return ok > before+200 })

	l.halt()
	ok, _, failed := l.snapshot()
	v, _ := rdb.Get("visitorCount")
	counted, _ := strconv.Atoi(v)
	t.Logf("load through %s: %d answers, %d failed; Redis counted %d", url, ok, len(failed), counted)
	if len(failed) > 0 {
		t.Errorf("%d failed requests through the front door: %q", len(failed), failed)
	}
	// HAProxy resends a request the killed instance was answering
	// (retry-on empty-response), which it may have counted: one at most,
	// since the load sends one request at a time.
	if extra := counted - ok; extra < 0 || extra > 1 {
		t.Errorf("Redis counted %d, the client got %d answers: want the answers, or one more for a request cut by the kill", counted, ok)
	}

	out, _, code := f.deployer("status", "-env", "dev", "-json")
	var st deploy.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.URL != url {
		t.Errorf("status -json: url %q (exit %d, %v), want %q", st.URL, code, err, url)
	}

	// make down, make up: the same URL, answering once an instance does.
	start := time.Now()
	f.stack = stacktest.RestartOwn(t, s)
	var last string
	waitFor(t, time.Minute, "answer through the front door after the restart", func() bool {
		res, err := http.Get(url)
		if err != nil {
			last = err.Error()
			return false
		}
		res.Body.Close()
		last = res.Status
		return res.StatusCode == http.StatusOK
	})
	t.Logf("after the stack stopped and started again, %s answered %s (%s after the stop)", url, last, time.Since(start).Round(100*time.Millisecond))
}
