package localstack_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/localstack"
)

// redisDo sends one command to Redis and returns its reply line.
func redisDo(t *testing.T, addr string, args ...string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c, "$%d\r\n%s\r\n", len(a), a)
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(line, "$") && !strings.HasPrefix(line, "$-1") {
		line, _ = r.ReadString('\n')
	}
	return strings.TrimSpace(line)
}

// TestUpKeepsStateWhenAComponentDies kills one component after another, as
// a crash would, and starts the stack again as make up does: only the dead
// component starts again, and the counter, the config snapshots and the job
// history are all still there.
func TestUpKeepsStateWhenAComponentDies(t *testing.T) {
	t.Parallel()
	cfg := ownConfig(t)
	cfg.Detach = true
	dir := cfg.Dir
	ctx := context.Background()
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = localstack.Down(context.Background(), dir, io.Discard) })

	// State in each: a counter, a snapshot, two job versions (in a
	// datacenter with no node, so nothing runs).
	redisDo(t, s.RedisAddr, "SET", "visitorCount", "42")
	cc, _ := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.ConsulToken})
	if _, err := cc.KV().Put(&consul.KVPair{Key: "counter/releases/default/keep/abc/PORT", Value: []byte("6379")}, nil); err != nil {
		t.Fatal(err)
	}
	nc, _ := nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: s.NomadToken})
	for i := range 2 {
		job := &nomad.Job{ID: ptr("keep"), Name: ptr("keep"), Datacenters: []string{"nowhere"}, Meta: map[string]string{"v": fmt.Sprint(i)},
			TaskGroups: []*nomad.TaskGroup{{Name: ptr("g"), Tasks: []*nomad.Task{{Name: "t", Driver: "raw_exec", Config: map[string]any{"command": "/bin/true"}}}}}}
		if _, _, err := nc.Jobs().Register(job, nil); err != nil {
			t.Fatal(err)
		}
	}

	pidOf := func() map[string]int { return recordedPIDs(t, dir) }
	for _, victim := range []string{"redis", "consul", "nomad", "prometheus"} {
		before := pidOf()
		if err := syscall.Kill(before[victim], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for syscall.Kill(before[victim], 0) == nil && !zombie(before[victim]) {
			time.Sleep(50 * time.Millisecond)
		}
		resumed := cfg
		resumed.Ports, resumed.Resume = s.Ports, true
		if s, err = localstack.Start(ctx, resumed); err != nil {
			t.Fatalf("start again after killing %s: %v", victim, err)
		}
		after := pidOf()
		for name, pid := range before {
			if kept := after[name] == pid; kept == (name == victim) {
				t.Errorf("after killing %s, %s is pid %d (was %d): only the dead one may start again", victim, name, after[name], pid)
			}
		}
		if got := redisDo(t, s.RedisAddr, "GET", "visitorCount"); got != "42" {
			t.Errorf("after killing %s, the counter is %q, want 42", victim, got)
		}
		if p, _, err := cc.KV().Get("counter/releases/default/keep/abc/PORT", nil); err != nil || p == nil || string(p.Value) != "6379" {
			t.Errorf("after killing %s, the snapshot is %+v (%v), want it kept", victim, p, err)
		}
		if versions, _, _, err := nc.Jobs().Versions("keep", false, nil); err != nil || len(versions) != 2 {
			t.Errorf("after killing %s, job history %d versions (%v), want 2", victim, len(versions), err)
		}
		if err := s.Healthy(ctx); err != nil {
			t.Errorf("after killing %s and starting again: %v", victim, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }
