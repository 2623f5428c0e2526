package localstack_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// TestClusterComesUpAndSurvivesItsLeader starts the cluster stack: three
// Nomad and three Consul servers in one Raft each, two client nodes with
// Consul agents of their own, every agent on its own loopback address. Then
// the Nomad leader is killed: the others elect one of themselves, and the
// old leader rejoins when it starts again. Not parallel: it runs before
// the package's parallel tests, so the election's timing is its own.
func TestClusterComesUpAndSurvivesItsLeader(t *testing.T) {
	s := stacktest.StartCluster(t)
	nc, cc := stacktest.Clients(t, s)

	peers, err := nc.Operator().RaftGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers.Servers) != 3 {
		t.Errorf("Nomad Raft peers %+v, want 3", peers.Servers)
	}
	members, err := cc.Agent().Members(false)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for _, m := range members {
		byName[m.Name] = m.Addr
	}
	for _, n := range s.Nodes {
		if byName[n.Name] != n.IP {
			t.Errorf("Consul member %s at %q, want %s (members %v)", n.Name, byName[n.Name], n.IP, byName)
		}
	}
	nodes, _, err := nc.Nodes().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	var ready []string
	for _, n := range nodes {
		if n.Status == nomad.NodeStatusReady {
			ready = append(ready, n.Name+"@"+n.Address)
		}
	}
	if len(ready) != 2 {
		t.Errorf("ready client nodes %v, want client-1 and client-2", ready)
	}

	leaderAddr, err := nc.Status().Leader()
	if err != nil {
		t.Fatal(err)
	}
	var leader string
	for _, n := range s.Nodes {
		if n.Server && leaderAddr == n.IP+":"+strconv.Itoa(s.Ports.NomadRPC) {
			leader = n.NomadAgent()
		}
	}
	if leader == "" {
		t.Fatalf("leader %s is none of the stack's servers", leaderAddr)
	}
	start := time.Now()
	if err := s.Kill(leader); err != nil {
		t.Fatal(err)
	}
	var other *nomad.Client
	for _, n := range s.Nodes {
		if n.Server && n.NomadAgent() != leader {
			other, _ = nomad.NewClient(&nomad.Config{Address: n.NomadAddr, SecretID: s.NomadToken})
			break
		}
	}
	var next string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if next, err = other.Status().Leader(); err == nil && next != "" && next != leaderAddr {
			break
		}
	}
	if next == "" || next == leaderAddr {
		t.Fatalf("no new leader 60 s after %s was killed (last %q, %v)", leader, next, err)
	}
	t.Logf("%s killed; %s leads after %s", leader, next, time.Since(start).Round(100*time.Millisecond))
	if err := restartHealthy(t.Context(), s, leader); err != nil {
		t.Fatal(err)
	}
}

// restartHealthy starts agent again, after Kill, and waits up to 60 s for
// the whole stack to be healthy.
func restartHealthy(ctx context.Context, s *localstack.Stack, agent string) error {
	if err := s.Restart(agent); err != nil {
		return err
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if err := s.Healthy(ctx); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("the cluster is not healthy 60 s after %s started again: %w", agent, err)
		}
	}
}
