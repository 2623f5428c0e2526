package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
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
		rdb := redistest.Start(t)
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
		rdb := redistest.Start(t)
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
		rdb0, rdb1 := redistest.Start(t), redistest.Start(t)
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
		if _, code := f.nomadCLI("job", "revert", "-detach", f.job, "v1"); code != 0 {
			t.Fatalf("nomad job revert with %s down: exit %d", down.Name, code)
		}
		if dep := f.waitForDeployment(revert, 90*time.Second); dep.Status != "successful" {
			t.Fatalf("nomad job revert with %s down: deployment %s", down.Name, dep.Status)
		}
		f.wantRunning(v1, "nomad job revert with a server down")
	})

	t.Run("rollback to a release whose node is gone", func(t *testing.T) {
		f := clusterFixture(t, s)
		rdb0, rdb1 := redistest.Start(t), redistest.Start(t)
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

	t.Run("a client node killed during a rolling update under load", func(t *testing.T) {
		// The load goes where users go, through dev's front door: HAProxy
		// on the edge address, asking every Consul agent.
		f, url := clusterDoorFixture(t, s)
		rdb := redistest.Start(t)
		// A rolling update (no canary), one instance at a time, quick
		// enough that the node is lost in its middle: Nomad takes ~20 s to
		// mark a node down, the four steps ~30 s. Without a canary,
		// auto_promote defaults to off.
		const update = "max_parallel = 1\ncanary = 0\nmin_healthy_time = \"3s\"\nhealthy_deadline = \"1m\"\nprogress_deadline = \"2m\""
		f.writeEnv("dev", rdb, 4, update)
		v0 := f.release(good, rdb)
		if per := f.runningPerNode(*v0.rec.Version); len(per) != 2 {
			t.Fatalf("v0 runs %v instances per node, want them spread over both nodes", per)
		}
		l := startURLLoad(t, url)
		waitFor(t, 30*time.Second, "the load's first answers through "+url, func() bool { ok, _, _ := l.snapshot(); return ok > 0 })

		done := f.submitInBackground(imageVariant(t, s, 4))
		dep := f.waitForRunningDeployment(time.Minute)
		// The node of the update's first new instance: the deployment
		// loses one of its own allocations and old ones.
		gone := f.nodeOfPlaced(dep, time.Minute)
		perV0, perV1 := f.runningPerNode(*v0.rec.Version), f.runningPerNode(*v0.rec.Version+1)
		lb, err := inHAProxy(s.Dir, "dev")
		if err != nil {
			t.Fatal(err)
		}
		onGone := f.instancesOn(gone, false)
		killing := time.Now()
		if err := s.KillNode(gone.Name); err != nil {
			t.Fatal(err)
		}
		// Its agents are dead and its containers gone: the instances
		// refuse connections from now on.
		killed := time.Now()
		okAtKill, _, _ := l.snapshot()
		t.Cleanup(func() { f.restart(gone.NomadAgent(), gone.ConsulAgent()) })
		t.Logf("killed %s in %s while deployment %s ran; v0 ran %v, v1 %v per node; HAProxy sent to %d of its %d instances in Consul",
			gone.Name, killed.Sub(killing).Round(10*time.Millisecond), dep.ID[:8], perV0, perV1, len(common(lb, onGone)), len(onGone))
		// Else nothing below could fail: the dead node served no user.
		if len(common(lb, onGone)) == 0 {
			t.Fatalf("HAProxy sent to none of %s's instances %v when it was killed (it sent to %v)", gone.Name, onGone, lb)
		}

		// Consul's servers list the dead node's instances as passing until
		// its gossip finds the node's agent dead (4-8 s); HAProxy's own
		// check (GET /readyz every second, two failures) takes them out of
		// its rotation first, whatever Consul says. Both watched every
		// 50 ms from the moment the containers were gone.
		var outOfHAProxy, outOfConsul time.Duration
		var passingWhenOut []string
		for deadline := killed.Add(time.Minute); outOfHAProxy == 0 || outOfConsul == 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("a minute after the kill: out of HAProxy after %s, out of Consul's passing list after %s (0: not yet)", outOfHAProxy, outOfConsul)
			}
			passing := f.instancesOn(gone, true)
			if outOfConsul == 0 && len(passing) == 0 {
				outOfConsul = time.Since(killed)
			}
			if lb, err := inHAProxy(s.Dir, "dev"); outOfHAProxy == 0 && err == nil && len(common(lb, onGone)) == 0 {
				outOfHAProxy = time.Since(killed)
				passingWhenOut = slices.Sorted(maps.Keys(passing))
			}
		}
		okAtOut, _, _ := l.snapshot()
		t.Logf("%s's instances out of HAProxy's rotation %s after the kill, %s after it began (Consul then listed %d of them passing: %v), out of Consul's passing list after %s",
			gone.Name, outOfHAProxy.Round(10*time.Millisecond), (outOfHAProxy + killed.Sub(killing)).Round(10*time.Millisecond),
			len(passingWhenOut), passingWhenOut, outOfConsul.Round(10*time.Millisecond))
		// Two failed checks a second apart take at most 2 s once the
		// instances are dead (the kill ends with their containers
		// removed); a second more for two busy cores and the watch's own
		// reads (the same margin as TestFrontDoorFollowsConsul).
		if outOfHAProxy > 3*time.Second {
			t.Errorf("%s's instances stayed in HAProxy's rotation %s after the kill, want within 2 s (3 s with the margin)",
				gone.Name, outOfHAProxy.Round(10*time.Millisecond))
		}
		// Whatever Consul says: HAProxy dropped them on its own word,
		// while Consul still called one passing.
		if len(passingWhenOut) == 0 {
			t.Errorf("HAProxy dropped %s's instances %s after the kill, once Consul had (%s): its own check did not act first",
				gone.Name, outOfHAProxy.Round(10*time.Millisecond), outOfConsul.Round(10*time.Millisecond))
		}
		f.waitForNodeDown(gone, 2*time.Minute)

		var r submitted
		select {
		case r = <-done:
		case <-time.After(4 * time.Minute):
			t.Fatal("submit did not end 4 minutes after the node was killed")
		}
		final, _, err := f.nomad.Deployments().Info(r.rec.DeploymentID, nil)
		if err != nil {
			t.Fatalf("deployment %q of the submit: %v\n%s", r.rec.DeploymentID, err, r.stderr)
		}
		// Exit 0 only for a deployment Nomad calls successful; exit 4 only
		// for one it failed and rolled back.
		switch {
		case r.code == exitOK && r.rec.Outcome == deploy.Succeeded && final.Status == "successful":
		case r.code == exitAutoReverted && r.rec.Outcome == deploy.AutoReverted && final.Status == "failed" &&
			r.rec.RevertedTo != nil && *r.rec.RevertedTo == *v0.rec.Version:
		default:
			t.Fatalf("submit: exit %d, outcome %q, reverted to %v; Nomad's deployment %s (%s); want exit 0 and successful, or exit 4 and failed back to v0\n%s",
				r.code, r.rec.Outcome, r.rec.RevertedTo, final.Status, final.StatusDescription, r.stderr)
		}
		t.Logf("submit: exit %d, %s; Nomad's deployment %s: %s", r.code, r.rec.Outcome, final.Status, final.StatusDescription)

		// The job's current version (v1, or Nomad's copy of v0) runs all
		// its instances on the live node and nothing else runs.
		current := *f.versions()[0].Version
		if d := f.waitForDeployment(current, 3*time.Minute); d.Status != "successful" {
			t.Fatalf("the deployment of version %d after the node loss: %s (%s)", current, d.Status, d.StatusDescription)
		}
		var per map[string]int
		waitFor(t, time.Minute, fmt.Sprintf("4 instances of version %d alone running, all on the live node", current), func() bool {
			per = f.runningPerNode(current)
			return len(per) == 1 && per[f.otherClient(gone).Name] == 4 && f.runningAllocs() == 4
		})

		l.halt()
		ok, _, failed := l.snapshot()
		n, _ := rdb.Get("visitorCount")
		counted, _ := strconv.Atoi(n)
		t.Logf("load through %s: %d answers (%d from the kill until HAProxy and Consul had both dropped the node's instances), %d failed; Redis counted %d",
			url, ok, okAtOut-okAtKill, len(failed), counted)
		// Users see nothing of the lost node: a request HAProxy sends to a
		// dead instance is refused, or cut if it was inside the instance
		// when the node died, and HAProxy sends it again to another
		// (retry-on conn-failure empty-response, option redispatch) until
		// its own check has taken the dead ones out.
		if len(failed) > 0 {
			var first []string
			for _, m := range failed[:min(len(failed), 5)] {
				first = append(first, fmt.Sprintf("%s after the kill: %s", m.at.Sub(killed).Round(time.Millisecond), m))
			}
			t.Errorf("%d failed requests through the front door, the first: %q", len(failed), first)
		}
		// A request cut by the kill may have been counted by the dead
		// instance before HAProxy resent it: Redis counts each answer
		// once, and at most one visit more, since the load sends one
		// request at a time, so no more than one was inside an instance
		// when the node died (the instances a release replaces leave
		// HAProxy before they stop, and cut none).
		if extra := counted - ok; extra < 0 || extra > 1 {
			t.Errorf("Redis counted %d, the load got %d answers: want the answers, or one more for a request cut by the kill", counted, ok)
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

// clusterDoorFixture is a clusterFixture whose job is the one the cluster
// stack's front door serves as dev (stacktest.ClusterFrontDoor), with the
// environments' url its URL, which it returns.
func clusterDoorFixture(t *testing.T, s *localstack.Stack) (*fixture, string) {
	t.Helper()
	door := stacktest.ClusterFrontDoor(t, s)
	f := fixtureOf(t, s, door.Service)
	stacktest.GrantJob(t, s, f.job)
	f.useNomad(s.Nodes[0])
	f.url = door.URL
	return f, door.URL
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
func (f *fixture) release(image string, rdb *redistest.Server) released {
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

// nodeOfPlaced waits for deployment dep to place an allocation and
// returns its node.
func (f *fixture) nodeOfPlaced(dep *nomad.Deployment, within time.Duration) localstack.Node {
	f.t.Helper()
	var node localstack.Node
	waitFor(f.t, within, "an allocation of deployment "+dep.ID[:8]+" on a node of the stack", func() bool {
		allocs, _, err := f.nomad.Deployments().Allocations(dep.ID, nil)
		for _, a := range allocs {
			for _, n := range f.stack.Nodes {
				if err == nil && n.NodeID != "" && n.NodeID == a.NodeID {
					node = n
					return true
				}
			}
		}
		return false
	})
	return node
}

// instancesOn returns the addresses (IP:PORT) of the job's instances that
// node n registered in Consul: those it lists as passing, or all.
func (f *fixture) instancesOn(n localstack.Node, passing bool) map[string]bool {
	f.t.Helper()
	entries, _, err := f.kv.Health().Service(f.job, "", passing, nil)
	if err != nil {
		f.t.Fatalf("instances of %s in Consul: %v", f.job, err)
	}
	addrs := map[string]bool{}
	for _, e := range entries {
		if e.Node.Node == n.Name {
			addrs[net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port))] = true
		}
	}
	return addrs
}

// common returns the keys a and b share, sorted.
func common(a, b map[string]bool) []string {
	var out []string
	for k := range a {
		if b[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// runningPerNode counts the running allocations of job version v per
// node name.
func (f *fixture) runningPerNode(v uint64) map[string]int {
	f.t.Helper()
	allocs, _, err := f.nomad.Jobs().Allocations(f.job, false, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	per := map[string]int{}
	for _, a := range allocs {
		if a.JobVersion == v && a.ClientStatus == "running" {
			per[a.NodeName]++
		}
	}
	return per
}

// runningAllocs counts the job's running allocations of any version.
func (f *fixture) runningAllocs() int {
	f.t.Helper()
	allocs, _, err := f.nomad.Jobs().Allocations(f.job, false, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	for _, a := range allocs {
		if a.ClientStatus == "running" {
			n++
		}
	}
	return n
}

// otherClient is the client node that is not n.
func (f *fixture) otherClient(n localstack.Node) localstack.Node {
	for _, o := range f.stack.Nodes {
		if !o.Server && o.Name != n.Name {
			return o
		}
	}
	f.t.Fatal("the stack has one client node")
	return localstack.Node{}
}
