package main

import (
	"maps"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// TestFrontDoorOutlivesTheConsulAgentItAsksFirst kills (SIGKILL) the
// Consul agent the cluster's front door names first among its nameservers
// (server-1's) under a load through the URL, then releases while it stays
// dead: no request fails, and the front door follows the release's new
// instances through the other agents it asks.
func TestFrontDoorOutlivesTheConsulAgentItAsksFirst(t *testing.T) {
	t.Parallel()
	f, s, url := frontDoorFixture(t, "agent", stacktest.Cluster())
	// The deployer and the test read Consul through a client node's agent,
	// as an operator's machine would, so that server-1's death leaves them
	// their own.
	client, _ := s.Node("client-1")
	f.useConsul(client.ConsulAddr)
	cc, err := consul.NewClient(&consul.Config{Address: client.ConsulAddr, Token: s.ConsulToken})
	if err != nil {
		t.Fatal(err)
	}
	f.kv = cc
	good, _ := releaseImages(t, s)
	f.writeEnv("dev", redistest.Start(t), 2, "min_healthy_time = \"1s\"\nhealthy_deadline = \"30s\"")
	if rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK {
		t.Fatalf("first release: exit %d %+v\n%s", code, rec, stderr)
	}
	l := startURLLoad(t, url)
	waitFor(t, 30*time.Second, "answer through the front door", func() bool { ok, _, _ := l.snapshot(); return ok > 0 })

	first := s.Nodes[0]
	if err := s.Kill(first.ConsulAgent()); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("killed %s, the Consul agent the front door asks first (%s)", first.ConsulAgent(), first.IP)
	// A release started before Consul's servers elect another leader
	// (server-1 may have been it) gets a 500 and exits 1 changing
	// nothing (docs/failures.md); the load goes on through the election.
	waitFor(t, time.Minute, "a Consul leader other than "+first.Name, func() bool {
		leader, err := f.kv.Status().Leader()
		return err == nil && leader != "" && !strings.HasPrefix(leader, first.IP+":")
	})
	rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", imageVariant(t, s, 1))
	if code != exitOK || rec.Outcome != deploy.Succeeded {
		t.Fatalf("a release with %s dead: exit %d %+v\n%s", first.ConsulAgent(), code, rec, stderr)
	}
	// The front door lists exactly the release's passing instances.
	var want, got map[string]bool
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		entries, _, err := f.kv.Health().Service(f.job, "", true, nil)
		if err != nil {
			t.Fatal(err)
		}
		want = map[string]bool{}
		for _, e := range entries {
			want[net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port))] = true
		}
		got, err = inHAProxy(s.Dir, "dev")
		if err == nil && len(want) == 2 && maps.Equal(want, got) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("10 s after the release the front door sends to %v (%v), Consul lists %v passing", got, err, want)
			break
		}
	}
	l.halt()
	ok, _, failed := l.snapshot()
	t.Logf("load through %s: %d answers, %d failed, over %s with %s dead and a release", url, ok, len(failed),
		time.Since(killed).Round(100*time.Millisecond), first.ConsulAgent())
	if len(failed) > 0 {
		t.Errorf("%d failed requests through the front door, the first: %q", len(failed), failed[:min(len(failed), 5)])
	}
}
