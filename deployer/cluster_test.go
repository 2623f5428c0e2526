package main

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/stacktest"
	"github.com/kodekloud/counter/internal/testredis"
)

// TestReleasesSurviveClusterFaults runs releases on the cluster stack (three
// Nomad and three Consul servers, two client nodes) while its parts fail as
// a real cluster's do. The faults take the whole cluster, so they run one
// after the other; each asserts what a user sees and that nothing is lost
// or half-written.
//
// Not parallel: Go runs it before the package's parallel tests start, so
// that the faults' timing does not compete with them for two cores.
func TestReleasesSurviveClusterFaults(t *testing.T) {
	s := stacktest.StartCluster(t)
	good, _ := releaseImages(t, s)

	t.Run("the Nomad leader killed while submit waits", func(t *testing.T) {
		f := clusterFixture(t, s)
		leader := f.nomadLeader()
		// The deployer talks to a follower, which forwards to the leader
		// and then, for a while, to nobody.
		f.useNomad(f.anotherServer(leader))
		rdb := testredis.Start(t)
		f.writeEnv("dev", rdb, 2, "min_healthy_time = \"5s\"\nhealthy_deadline = \"1m\"\nprogress_deadline = \"2m\"")

		done := f.submitInBackground(good)
		dep := f.waitForRunningDeployment(time.Minute)
		if err := s.Kill(leader.NomadAgent()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.restart(leader.NomadAgent()) })
		t.Logf("killed the Nomad leader %s while deployment %s ran", leader.Name, dep.ID[:8])

		r := <-done
		final, _, err := f.nomad.Deployments().Info(dep.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.code != exitOK || r.rec.Outcome != deploy.Succeeded || final.Status != "successful" {
			t.Errorf("submit: exit %d, outcome %q; Nomad's deployment %s; want exit 0 and successful in both\n%s",
				r.code, r.rec.Outcome, final.Status, r.stderr)
		}
		f.wantRunning(released{r.rec, rdb}, "after a new leader took over")

		// The job spreads its two instances over the two nodes, and
		// status says so per node.
		out, _, code := f.deployer("status", "-env", "dev", "-json")
		var st deploy.Status
		if err := json.Unmarshal([]byte(out), &st); code != exitOK || err != nil {
			t.Fatalf("status: exit %d, %v", code, err)
		}
		if len(st.Nodes) != 2 || st.Nodes[0].Healthy != 1 || st.Nodes[1].Healthy != 1 {
			t.Errorf("status per node %+v, want one healthy instance on each of the two nodes", st.Nodes)
		}
	})

	t.Run("one Consul server restarted while submit holds the deploy lock", func(t *testing.T) {
		f := clusterFixture(t, s)
		// The deployer talks to a client node's Consul agent, as it
		// would on an operator's machine; its leader restarts.
		client, _ := s.Node("client-2")
		f.useConsul(client.ConsulAddr)
		rdb := testredis.Start(t)
		// Long enough that the lock is still held after the restart.
		f.writeEnv("dev", rdb, 1, "min_healthy_time = \"25s\"\nhealthy_deadline = \"1m\"")
		done := f.submitInBackground(good)
		f.waitForLock(time.Minute)
		leader := f.consulLeader()
		if err := s.Kill(leader.ConsulAgent()); err != nil {
			t.Fatal(err)
		}
		if err := s.Restart(leader.ConsulAgent()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.restart() })
		agent, err := consul.NewClient(&consul.Config{Address: client.ConsulAddr, Token: s.ConsulToken})
		if err != nil {
			t.Fatal(err)
		}
		// Once the agent reads through a server again: the restarted one
		// refuses connections until it is up, and an agent that tries it
		// first answers 500 (the deployer then exits 1, having changed
		// nothing).
		reads := 0
		waitFor(t, time.Minute, "Consul reads through "+client.Name+"'s agent after the restart", func() bool {
			if _, _, err := agent.KV().Get(f.lockKey(), nil); err != nil {
				reads = 0
			} else {
				reads++
			}
			return reads == 5
		})
		t.Logf("restarted the Consul leader %s while the first submit held the lock", leader.Name)

		_, code, stderr := submitJSON(t, f, "-env", "dev", "-image", imageVariant(t, s, 3))
		first := <-done
		// The lock refused it, naming its holder: the check for a running
		// deployment, which comes after the lock, would refuse it too.
		if code != exitConflict || !strings.Contains(stderr, "held by") {
			t.Errorf("a second submit while the first held the lock: exit %d, want %d (conflict) from the lock, naming its holder\n%s", code, exitConflict, stderr)
		}
		if first.code != exitOK {
			t.Errorf("the first submit: exit %d, want 0\n%s", first.code, first.stderr)
		}
		// Every snapshot belongs to a registered version: the conflict
		// wrote none.
		if snaps := f.snapshots(); len(snaps) != len(f.versions()) {
			t.Errorf("snapshots %v for %d job versions: one is orphaned", snaps, len(f.versions()))
		}
	})

	t.Run("rollback and nomad job revert with one server down", func(t *testing.T) {
		f := clusterFixture(t, s)
		rdb0, rdb1 := testredis.Start(t), testredis.Start(t)
		f.writeEnv("dev", rdb0, 1, "")
		v0 := f.release(good, rdb0)
		f.writeEnv("dev", rdb1, 1, "")
		v1 := f.release(imageVariant(t, s, 1), rdb1)

		down := f.nomadLeader()
		f.useNomad(f.anotherServer(down))
		if err := s.Kill(down.NomadAgent()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.restart(down.NomadAgent()) })
		// One server down, the others agreed on a leader: a command run
		// during the election's seconds fails having changed nothing.
		f.waitForNewLeader(down)
		if rec, code, stderr := f.rollbackJSON("-to", "v0"); code != exitOK {
			t.Fatalf("rollback -to v0 with %s down: exit %d %+v\n%s", down.Name, code, rec, stderr)
		}
		f.wantRunning(v0, "rollback with a server down")

		revert := *f.versions()[0].Version + 1
		cmd := exec.Command(stacktest.ClusterBinaries(t).Nomad, "job", "revert", "-detach", f.job, "v1")
		cmd.Env = f.nomadCLIEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nomad job revert with %s down: %v\n%s", down.Name, err, out)
		}
		if dep := f.waitForDeployment(revert, 90*time.Second); dep.Status != "successful" {
			t.Fatalf("nomad job revert with %s down: deployment %s", down.Name, dep.Status)
		}
		f.wantRunning(v1, "nomad job revert with a server down")
	})

	t.Run("rollback to a release whose node is gone", func(t *testing.T) {
		f := clusterFixture(t, s)
		rdb0, rdb1 := testredis.Start(t), testredis.Start(t)
		f.writeEnv("dev", rdb0, 1, "")
		v0 := f.release(good, rdb0)
		gone := f.nodeOf(*v0.rec.Version)
		f.writeEnv("dev", rdb1, 1, "")
		f.release(imageVariant(t, s, 2), rdb1)

		if err := s.KillNode(gone.Name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.restart(gone.NomadAgent(), gone.ConsulAgent()) })
		f.waitForNodeDown(gone, 2*time.Minute)
		if rec, code, stderr := f.rollbackJSON("-to", "v0"); code != exitOK {
			t.Fatalf("rollback -to v0 with node %s gone: exit %d %+v\n%s", gone.Name, code, rec, stderr)
		}
		f.wantRunning(v0, "rollback with its node gone")
		if now := f.nodeOf(*f.versions()[0].Version); now.Name == gone.Name {
			t.Errorf("v0 placed on %s again, which is gone", gone.Name)
		}
	})
}

// submitted is how a submit run in the background ended.
type submitted struct {
	rec    deploy.Record
	code   int
	stderr string
}

// submitInBackground submits image to dev and hands over how it ended.
func (f *fixture) submitInBackground(image string) <-chan submitted {
	done := make(chan submitted, 1)
	go func() {
		rec, code, stderr := submitJSON(f.t, f, "-env", "dev", "-image", image)
		done <- submitted{rec, code, stderr}
	}()
	return done
}

// clusterFixture is a fixture on the cluster stack.
func clusterFixture(t *testing.T, s *localstack.Stack) *fixture {
	t.Helper()
	f := fixtureOn(t, s)
	f.useNomad(s.Nodes[0])
	return f
}

// useNomad points the deployer, the nomad CLI and the test's own Nomad
// client at server n.
func (f *fixture) useNomad(n localstack.Node) {
	f.t.Helper()
	c, err := nomad.NewClient(&nomad.Config{Address: n.NomadAddr, SecretID: f.stack.NomadToken})
	if err != nil {
		f.t.Fatal(err)
	}
	f.nomad, f.env["NOMAD_ADDR"], f.nomadAddr = c, n.NomadAddr, n.NomadAddr
}

// useConsul points the deployer at the Consul agent at addr.
func (f *fixture) useConsul(addr string) { f.env["CONSUL_HTTP_ADDR"] = addr }

// release submits image with the environment as written and returns it,
// failing the test unless it succeeds.
func (f *fixture) release(image string, rdb *testredis.Server) released {
	f.t.Helper()
	rec, code, stderr := submitJSON(f.t, f, "-env", "dev", "-image", image)
	if code != exitOK {
		f.t.Fatalf("submit %s: exit %d\n%s", image, code, stderr)
	}
	return released{rec, rdb}
}

// nomadLeader is the server that leads Nomad's Raft now.
func (f *fixture) nomadLeader() localstack.Node {
	f.t.Helper()
	addr, err := f.nomad.Status().Leader()
	if err != nil {
		f.t.Fatal(err)
	}
	return f.serverAt(addr)
}

// consulLeader is the server that leads Consul's Raft now.
func (f *fixture) consulLeader() localstack.Node {
	f.t.Helper()
	addr, err := f.kv.Status().Leader()
	if err != nil {
		f.t.Fatal(err)
	}
	return f.serverAt(addr)
}

func (f *fixture) serverAt(addr string) localstack.Node {
	f.t.Helper()
	ip, _, _ := net.SplitHostPort(addr)
	for _, n := range f.stack.Nodes {
		if n.Server && n.IP == ip {
			return n
		}
	}
	f.t.Fatalf("leader %s is none of the stack's servers", addr)
	return localstack.Node{}
}

// anotherServer is a server other than n.
func (f *fixture) anotherServer(n localstack.Node) localstack.Node {
	for _, o := range f.stack.Nodes {
		if o.Server && o.Name != n.Name {
			return o
		}
	}
	f.t.Fatal("the stack has one server")
	return localstack.Node{}
}

// waitForNewLeader waits until the servers left elected one of
// themselves after old went down.
func (f *fixture) waitForNewLeader(old localstack.Node) {
	f.t.Helper()
	start := time.Now()
	waitFor(f.t, time.Minute, "new Nomad leader", func() bool {
		addr, err := f.nomad.Status().Leader()
		ip, _, _ := net.SplitHostPort(addr)
		return err == nil && ip != "" && ip != old.IP
	})
	f.t.Logf("a new Nomad leader %s after %s", f.nomadLeader().Name, time.Since(start).Round(100*time.Millisecond))
}

// restart starts agents that a fault stopped and waits until the whole
// cluster answers again, so that the next fault finds it whole.
func (f *fixture) restart(agents ...string) {
	f.t.Helper()
	for _, a := range agents {
		if err := f.stack.Restart(a); err != nil {
			f.t.Errorf("restart %s: %v", a, err)
		}
	}
	var err error
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		// Not t.Context(): cleanups run after it is cancelled.
		if err = f.stack.Healthy(context.Background()); err == nil {
			return
		}
	}
	f.t.Errorf("the cluster is not whole 2 minutes after %v started again: %v", agents, err)
}

// waitForRunningDeployment waits for the newest version's deployment to run.
func (f *fixture) waitForRunningDeployment(within time.Duration) *nomad.Deployment {
	f.t.Helper()
	var dep *nomad.Deployment
	waitFor(f.t, within, "running deployment of "+f.job, func() bool {
		d, _, err := f.nomad.Jobs().LatestDeployment(f.job, nil)
		dep = d
		return err == nil && d != nil && d.Status == "running"
	})
	return dep
}

// nodeOf is the node that runs the running allocation of job version v.
func (f *fixture) nodeOf(v uint64) localstack.Node {
	f.t.Helper()
	allocs, _, err := f.nomad.Jobs().Allocations(f.job, false, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, a := range allocs {
		if a.JobVersion == v && a.ClientStatus == "running" {
			for _, n := range f.stack.Nodes {
				if n.NodeID == a.NodeID {
					return n
				}
			}
		}
	}
	f.t.Fatalf("no running allocation of %s version %d on a node of the stack", f.job, v)
	return localstack.Node{}
}

// waitForNodeDown waits until Nomad has marked n down: it missed its
// heartbeats.
func (f *fixture) waitForNodeDown(n localstack.Node, within time.Duration) {
	f.t.Helper()
	start := time.Now()
	waitFor(f.t, within, "node "+n.Name+" marked down", func() bool {
		node, _, err := f.nomad.Nodes().Info(n.NodeID, nil)
		return err == nil && node.Status == nomad.NodeStatusDown
	})
	f.t.Logf("Nomad marked %s down %s after it was killed", n.Name, time.Since(start).Round(time.Second))
}
