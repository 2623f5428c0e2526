package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// move is what was seen of one replaced instance: when it left Consul,
// when HAProxy stopped listing it, and when its port closed (zero: not
// seen).
type move struct {
	addr                    string
	leftConsul, leftHAProxy time.Time
	closed                  time.Time
}

// inHAProxy lists the instances HAProxy may send backend's requests to
// now, as IP:PORT: its servers neither in maintenance or drain (a record
// Consul no longer gives is put in maintenance at once) nor down by its
// own check, read from its admin
// socket in the stack's folder (the stats page's CSV leaves addresses out).
func inHAProxy(dir, backend string) (map[string]bool, error) {
	c, err := net.DialTimeout("unix", filepath.Join(dir, "haproxy.sock"), time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("show servers state " + backend + "\n")); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var header []string
	out := map[string]bool{}
	for _, line := range lines {
		f := strings.Fields(line)
		switch {
		case len(f) > 1 && f[0] == "#":
			header = f[1:]
		case header != nil && len(f) == len(header):
			row := map[string]string{}
			for i, h := range header {
				row[h] = f[i]
			}
			// Admin state bits 0x01-0x20 are maintenance or drain
			// (0x20: resolution, a record Consul no longer gives);
			// 0x40 says only that the name came from an SRV record.
			admin, err := strconv.Atoi(row["srv_admin_state"])
			if err == nil && admin&0x3f == 0 && row["srv_op_state"] != "0" {
				out[net.JoinHostPort(row["srv_addr"], row["srv_port"])] = true
			}
		}
	}
	if header == nil {
		return nil, fmt.Errorf("HAProxy's show servers state: %q", b)
	}
	return out, nil
}

// TestFrontDoorMovesGracefully checks what issue 25 asks of a release
// behind the front door: a canary carries the "canary" tag in Consul until
// promoted, and the instances it replaces leave Consul, then HAProxy, and
// only then close their port (shutdown_delay), under a load through the
// URL that loses nothing. Then HAProxy is SIGKILLed: status (one
// environment and all) says the front door is down, exit 8, and make up's
// resume path starts it again.
func TestFrontDoorMovesGracefully(t *testing.T) {
	t.Parallel()
	f, s, url := frontDoorFixture(t, "moves")
	job := f.job
	good, _ := releaseImages(t, s)
	f.writeEnv("dev", redistest.Start(t), 2, "canary = 1\nauto_promote = false\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"30s\"")
	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK {
		t.Fatalf("first release: exit %d %+v\n%s", code, rec, stderr)
	}
	l := startURLLoad(t, url)
	waitFor(t, 30*time.Second, "answer through the front door", func() bool { ok, _, _ := l.snapshot(); return ok > 0 })

	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", imageVariant(t, s, 1)); code != exitUnknown || rec.Outcome != deploy.AwaitingPromotion {
		t.Fatalf("the canary release: exit %d %+v\n%s", code, rec, stderr)
	}
	// Consul tells the canary from the instances it would replace.
	entries, _, err := f.kv.Health().Service(job, "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	var canaries []string
	old := map[string]*move{}
	for _, e := range entries {
		addr := net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port))
		if hasTag(e.Service.Tags, "canary") {
			canaries = append(canaries, addr)
		} else {
			old[addr] = &move{addr: addr}
		}
	}
	if len(canaries) != 1 || len(old) != 2 {
		t.Fatalf("passing instances while the canary waits: canaries %v, others %d, want 1 tagged canary and 2 not", canaries, len(old))
	}

	// HAProxy sends to all three before the promotion (the canary once
	// its check passed twice, a second apart): the watch below sees the
	// old ones leave.
	waitFor(t, 10*time.Second, "HAProxy sending to the 3 passing instances", func() bool {
		lb, err := inHAProxy(s.Dir, "dev")
		return err == nil && len(lb) == 3
	})
	// Promote, and watch each replaced instance every 50 ms.
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			now := time.Now()
			listed := map[string]bool{}
			if es, _, err := f.kv.Health().Service(job, "", false, nil); err == nil {
				for _, e := range es {
					listed[net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port))] = true
				}
			} else {
				continue
			}
			inLB, err := inHAProxy(s.Dir, "dev")
			if err != nil {
				continue
			}
			for addr, m := range old {
				if m.leftConsul.IsZero() && !listed[addr] {
					m.leftConsul = now
				}
				if m.leftHAProxy.IsZero() && !inLB[addr] {
					m.leftHAProxy = now
				}
				if m.closed.IsZero() {
					if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err != nil {
						m.closed = now
					} else {
						c.Close()
					}
				}
			}
		}
	}()
	out, stderr, code := f.deployer("deployment", "-env", "dev", "-json", "promote")
	var rec deploy.Record
	if err := json.Unmarshal([]byte(out), &rec); err != nil || code != exitOK || rec.Outcome != deploy.Succeeded {
		close(done)
		t.Fatalf("promote: exit %d %+v (%v)\n%s", code, rec, err, stderr)
	}
	waitFor(t, 30*time.Second, "port closed of every replaced instance", func() bool {
		for _, m := range old {
			if m.closed.IsZero() {
				return false
			}
		}
		return true
	})
	close(done)
	<-watched
	for _, m := range old {
		t.Logf("%s: out of HAProxy %s and closed %s after it left Consul", m.addr,
			m.leftHAProxy.Sub(m.leftConsul).Round(10*time.Millisecond), m.closed.Sub(m.leftConsul).Round(10*time.Millisecond))
		if m.leftConsul.IsZero() || m.leftHAProxy.IsZero() || !m.leftConsul.Before(m.closed) || !m.leftHAProxy.Before(m.closed) {
			t.Errorf("%s left Consul at %s and HAProxy at %s, closed at %s: want it out of both before it closes",
				m.addr, m.leftConsul.Format("15:04:05.000"), m.leftHAProxy.Format("15:04:05.000"), m.closed.Format("15:04:05.000"))
		}
	}
	entries, _, err = f.kv.Health().Service(job, "canary", false, nil)
	if err != nil || len(entries) != 0 {
		t.Errorf("after the promotion %d instances still tagged canary (%v), want none", len(entries), err)
	}
	l.halt()
	ok, _, failed := l.snapshot()
	t.Logf("load through %s across the promotion: %d answers, %d failed", url, ok, len(failed))
	if len(failed) > 0 {
		t.Errorf("%d failed requests through the front door: %q", len(failed), failed)
	}

	// HAProxy dies (SIGKILL): status says so, in both forms.
	pid := recordedPID(t, s.Dir, "haproxy")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "HAProxy gone", func() bool {
		_, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"))
		return err != nil
	})
	out, stderr, code = f.deployer("status", "-env", "dev")
	if code != exitFrontDoor || !strings.Contains(out, "front door down") || !strings.Contains(stderr, "front door of dev is down") {
		t.Errorf("status -env dev with HAProxy dead: exit %d, want %d and the front door said down:\n%s%s", code, exitFrontDoor, out, stderr)
	}
	out, stderr, code = f.deployer("status")
	if code != exitFrontDoor || !strings.Contains(out, "(front door down)") || !strings.Contains(out, "dev: the front door at "+url+" is down") {
		t.Errorf("status with HAProxy dead: exit %d, want %d and the front door said down:\n%s%s", code, exitFrontDoor, out, stderr)
	}
	out, _, _ = f.deployer("status", "-env", "dev", "-json")
	var st deploy.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || !strings.HasPrefix(st.FrontDoor, "down: ") {
		t.Errorf("status -json: front_door %q (%v), want down", st.FrontDoor, err)
	}

	// make up: only the dead front door starts again, and the URL answers.
	start := time.Now()
	f.stack = stacktest.ResumeOwn(t, s)
	if got := recordedPID(t, s.Dir, "haproxy"); got == pid {
		t.Errorf("HAProxy is still pid %d after the resume", got)
	}
	waitFor(t, 30*time.Second, "answer 200 through the front door after the resume", func() bool {
		res, err := http.Get(url + "readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
	t.Logf("make up's resume brought the front door back; the URL answered %s after it began", time.Since(start).Round(100*time.Millisecond))
	if out, stderr, code := f.deployer("status", "-env", "dev"); code != exitOK || !strings.Contains(out, "front door up") {
		t.Errorf("status after the resume: exit %d, want 0 and the front door up:\n%s%s", code, out, stderr)
	}
}

func hasTag(tags []string, tag string) bool {
	for _, t := range tags {
		if t == tag {
			return true
		}
	}
	return false
}

// recordedPID is the pid the stack in dir recorded for name.
func recordedPID(t *testing.T, dir, name string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(b))[0])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
