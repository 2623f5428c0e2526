package localstack_test

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
	"syscall"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/access"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
	"github.com/kodekloud/counter/internal/welcome"
)

func TestMain(m *testing.M) { stacktest.Main(m) }

func TestStackComesUpHealthy(t *testing.T) {
	t.Parallel()
	s := stacktest.Start(t)

	nc, err := nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: s.NomadToken})
	if err != nil {
		t.Fatal(err)
	}
	nodes, _, err := nc.Nodes().List(nil)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes: %v %v, want one", nodes, err)
	}
	node, _, err := nc.Nodes().Info(nodes[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if node.Status != "ready" {
		t.Errorf("node status %q, want ready", node.Status)
	}
	for _, d := range []string{"docker", "raw_exec"} {
		if info := node.Drivers[d]; info == nil || !info.Detected || !info.Healthy {
			t.Errorf("driver %s: %+v, want detected and healthy", d, info)
		}
	}

	cc, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.ConsulToken})
	if err != nil {
		t.Fatal(err)
	}
	if leader, err := cc.Status().Leader(); err != nil || leader == "" {
		t.Errorf("consul leader %q, %v; want one", leader, err)
	}
	// Nomad is wired to this Consul: it registers its own services there,
	// a few seconds after its node is ready.
	var services map[string][]string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if services, _, err = cc.Catalog().Services(nil); err == nil && services["nomad-client"] != nil {
			break
		}
	}
	if _, ok := services["nomad-client"]; !ok {
		t.Errorf("consul services %v lack nomad-client after 30 s: Nomad is not using this Consul", services)
	}

	// No outside calls: both agents say their update check is off, and
	// neither log shows one (Nomad's would come within 30 s of its start).
	nself, err := nc.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	if off, _ := nself.Config["DisableUpdateCheck"].(bool); !off {
		t.Errorf("Nomad's DisableUpdateCheck = %v, want true: a local stack makes no outside calls", nself.Config["DisableUpdateCheck"])
	}
	cself, err := cc.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	if off, _ := cself["DebugConfig"]["DisableUpdateCheck"].(bool); !off {
		t.Errorf("Consul's DisableUpdateCheck = %v, want true", cself["DebugConfig"]["DisableUpdateCheck"])
	}
	for _, name := range []string{"nomad", "consul"} {
		log := s.LogTail(name, 100000)
		for _, call := range []string{"checkpoint", "check for updates"} {
			if strings.Contains(log, call) {
				t.Errorf("%s.log mentions %q: the agent tried to call home", name, call)
			}
		}
	}
}

// kvJob runs the project's image with HOST and PORT rendered by Nomad's
// template block from Consul KV.
const kvJob = `
variable "image" { type = string }
variable "prefix" { type = string }

job "%s" {
  type = "service"

  group "web" {
    network {
      port "http" {}
    }

    task "app" {
      driver = "docker"
      consul {}

      config {
        image        = var.image
        network_mode = "host"
      }

      template {
        data        = <<EOT
HOST={{ key "${var.prefix}/HOST" }}
PORT={{ key "${var.prefix}/PORT" }}
EOT
        destination = "local/redis.env"
        env         = true
      }

      env {
        LISTEN_ADDR = "${NOMAD_ADDR_http}"
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
`

func TestDockerJobReadsRedisAddressFromConsulKV(t *testing.T) {
	t.Parallel()
	s := stacktest.Start(t)
	tag := "counter:" + stacktest.Name(t, "stack")
	imagetest.Build(t, tag)
	t.Cleanup(func() { _, _ = imagetest.Docker("rmi", tag) })

	rdb := redistest.Start(t)
	if err := rdb.Set("visitorCount", "99"); err != nil {
		t.Fatal(err)
	}
	name := stacktest.Name(t, "kv")
	prefix := "test/" + name
	cc, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.ConsulToken})
	if err != nil {
		t.Fatal(err)
	}
	// With ACLs on, the job's tasks may read its prefix and nothing else.
	if err := access.GrantJobConfig(context.Background(), cc, "default", name, prefix); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"HOST": rdb.Host, "PORT": strconv.Itoa(rdb.Port)} {
		if _, err := cc.KV().Put(&consul.KVPair{Key: prefix + "/" + k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}

	nc, err := nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: s.NomadToken})
	if err != nil {
		t.Fatal(err)
	}
	job, err := nc.Jobs().ParseHCLOpts(&nomad.JobsParseRequest{
		JobHCL:       fmt.Sprintf(kvJob, name),
		Variables:    fmt.Sprintf("image = %q\nprefix = %q\n", tag, prefix),
		Canonicalize: true,
	})
	if err != nil {
		t.Fatalf("parse job: %v", err)
	}
	if _, _, err := nc.Jobs().Register(job, nil); err != nil {
		t.Fatalf("register job: %v", err)
	}

	addr := waitForAddress(t, nc, name, "http")
	res, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	// 100 proves the container counts in the Redis that Consul KV named.
	if got, want := string(body), welcome.Prefix+"100"; got != want {
		t.Errorf("GET / on %s = %q, want %q", addr, got, want)
	}
}

// waitForAddress waits until the job's allocation runs and answers /healthz
// on its port label, and returns host:port.
func waitForAddress(t *testing.T, nc *nomad.Client, job, label string) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		allocs, _, err := nc.Jobs().Allocations(job, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, stub := range allocs {
			if stub.ClientStatus == "failed" {
				a, _, _ := nc.Allocations().Info(stub.ID, nil)
				t.Fatalf("allocation %s failed: %+v", stub.ID, a.TaskStates)
			}
			if stub.ClientStatus != "running" {
				last = "allocation " + stub.ClientStatus
				continue
			}
			a, _, err := nc.Allocations().Info(stub.ID, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range a.AllocatedResources.Shared.Networks {
				for _, p := range n.DynamicPorts {
					if p.Label != label {
						continue
					}
					addr := fmt.Sprintf("%s:%d", n.IP, p.Value)
					res, err := http.Get("http://" + addr + "/healthz")
					if err == nil {
						res.Body.Close()
						return addr
					}
					last = err.Error()
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("job %s did not answer within 2m: %s", job, last)
	return ""
}

// TestDownStopsEverythingUpStarted starts a detached stack as `make up` does,
// runs a container in it, and checks that Down leaves no process and no
// container behind.
func TestDownStopsEverythingUpStarted(t *testing.T) {
	t.Parallel()
	tag := "counter:" + stacktest.Name(t, "down")
	imagetest.Build(t, tag)
	t.Cleanup(func() { _, _ = imagetest.Docker("rmi", tag) })

	cfg := ownConfig(t)
	cfg.Detach = true
	dir := cfg.Dir
	ctx := context.Background()
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pids := recordedPIDs(t, dir)
	if len(pids) != 5 {
		t.Fatalf("recorded pids %v, want consul, redis, registry, nomad and prometheus", pids)
	}

	rdb := redistest.Start(t)
	cc, _ := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.ConsulToken})
	name := stacktest.Name(t, "down")
	if err := access.GrantJobConfig(context.Background(), cc, "default", name, name); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"HOST": rdb.Host, "PORT": strconv.Itoa(rdb.Port)} {
		if _, err := cc.KV().Put(&consul.KVPair{Key: name + "/" + k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	nc, _ := nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: s.NomadToken})
	job, err := nc.Jobs().ParseHCLOpts(&nomad.JobsParseRequest{
		JobHCL:       fmt.Sprintf(kvJob, name),
		Variables:    fmt.Sprintf("image = %q\nprefix = %q\n", tag, name),
		Canonicalize: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := nc.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	waitForAddress(t, nc, name, "http")
	allocs, _, _ := nc.Jobs().Allocations(name, true, nil)
	// A raw_exec task too: its executor leads a session of its own, out of
	// Nomad's group.
	sleep := fmt.Sprint(100000 + os.Getpid())
	raw := &nomad.Job{ID: ptr(name + "-raw"), Datacenters: []string{"dc1"}, TaskGroups: []*nomad.TaskGroup{{
		Name: ptr("g"), Tasks: []*nomad.Task{{Name: "t", Driver: "raw_exec", Config: map[string]any{"command": "/bin/sleep", "args": []string{sleep}},
			Resources: &nomad.Resources{CPU: ptr(20), MemoryMB: ptr(16)}}},
	}}}
	if _, _, err := nc.Jobs().Register(raw, nil); err != nil {
		t.Fatal(err)
	}
	rawTask := func() []string {
		return processes(t, func(cmd string) bool {
			return cmd == "/bin/sleep "+sleep || strings.Contains(cmd, "nomad executor {\"LogFile\":\""+dir+"/")
		})
	}
	t.Cleanup(func() {
		for _, p := range rawTask() {
			pid, _ := strconv.Atoi(strings.Fields(p)[0])
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	for deadline := time.Now().Add(60 * time.Second); len(rawTask()) < 2; time.Sleep(250 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the raw_exec task and its executor do not run 60 s after its job was registered: %v", rawTask())
		}
	}
	// Nomad's per-task plugins (logmon, docker_logger) run in its group.
	if kids := groupMembers(t, pids["nomad"]); len(kids) == 0 {
		t.Errorf("no process in Nomad's group besides Nomad while a task runs; want its task plugins")
	}

	if err := localstack.Down(ctx, dir, io.Discard); err != nil {
		t.Fatalf("Down: %v", err)
	}
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil && !zombie(pid) {
			t.Errorf("%s (pid %d) still runs after Down", name, pid)
		}
		if left := groupMembers(t, pid); len(left) > 0 {
			t.Errorf("processes %v of %s's group still run after Down", left, name)
		}
	}
	for _, a := range allocs {
		out, _ := imagetest.Docker("ps", "-aq", "--filter", "label=com.hashicorp.nomad.alloc_id="+a.ID)
		if out != "" {
			t.Errorf("container %s of allocation %s survived Down", out, a.ID)
		}
	}
	if left := rawTask(); len(left) > 0 {
		t.Errorf("a raw_exec task or its executor survived Down: %v", left)
	}
	if s.NodeID == "" {
		t.Error("Start recorded no Nomad node ID")
	} else if out, _ := imagetest.Docker("ps", "-aq", "--filter", "label=com.hashicorp.nomad.node_id="+s.NodeID); out != "" {
		t.Errorf("containers %s of node %s survived Down", out, s.NodeID)
	}
	if err := s.Healthy(ctx); err == nil {
		t.Error("the stack still answers after Down")
	}
}

func recordedPIDs(t *testing.T, dir string) map[string]int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.pid"))
	pids := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.Fields(string(b))[0])
		if err != nil {
			t.Fatal(err)
		}
		pids[strings.TrimSuffix(filepath.Base(f), ".pid")] = pid
	}
	return pids
}

// groupMembers lists the live processes of process group pgid, its leader
// aside.
func groupMembers(t *testing.T, pgid int) []string {
	t.Helper()
	out, err := exec.Command("ps", "-e", "-o", "pid=,pgid=,stat=,args=").Output()
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[1] != strconv.Itoa(pgid) || f[0] == f[1] || strings.HasPrefix(f[2], "Z") {
			continue
		}
		left = append(left, f[0]+" "+strings.Join(f[3:], " "))
	}
	return left
}

// processes lists the live processes whose command line match accepts,
// as "PID ARGS".
func processes(t *testing.T, match func(cmd string) bool) []string {
	t.Helper()
	out, err := exec.Command("ps", "-e", "-o", "pid=,stat=,args=").Output()
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || strings.HasPrefix(f[1], "Z") {
			continue
		}
		if cmd := strings.Join(f[2:], " "); match(cmd) {
			found = append(found, f[0]+" "+cmd)
		}
	}
	return found
}

func zombie(pid int) bool {
	out, err := exec.Command("ps", "-o", "stat=", "-p", strconv.Itoa(pid)).Output()
	return err != nil || strings.HasPrefix(strings.TrimSpace(string(out)), "Z")
}

// Polling is what Start and `make up` do while a node comes up; a stack that
// opened a connection per poll hit Nomad's limit of 100 per client address
// and then never saw the node ready.
func TestManyHealthChecksStayUnderNomadsConnectionLimit(t *testing.T) {
	t.Parallel()
	s := stacktest.Start(t)
	for i := range 150 {
		if err := s.Healthy(context.Background()); err != nil {
			t.Fatalf("health check %d: %v", i+1, err)
		}
	}
}

// The stack denies what no token allows, and keeps its tokens out of every
// file but its secrets, which only their owner reads.
func TestStackEnforcesACLs(t *testing.T) {
	t.Parallel()
	s := stacktest.Start(t)
	if !s.ACL || s.NomadToken == "" || s.ConsulToken == "" {
		t.Fatalf("ACL %v, tokens set: %v %v; want ACLs on with both tokens", s.ACL, s.NomadToken != "", s.ConsulToken != "")
	}
	anonNomad, err := nomad.NewClient(&nomad.Config{Address: s.NomadAddr})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := anonNomad.Jobs().List(nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("Nomad without a token listed jobs: %v, want 403", err)
	}
	anonConsul, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anonConsul.KV().Put(&consul.KVPair{Key: "counter/releases/x", Value: []byte("y")}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("Consul without a token wrote a key: %v, want 403", err)
	}

	nf, cf := localstack.TokenFiles(s.Dir)
	for _, f := range []string{nf, cf, filepath.Join(s.Dir, "consul.json"), filepath.Join(s.Dir, "nomad.hcl")} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Error(err)
		} else if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	b, err := os.ReadFile(filepath.Join(s.Dir, "stack.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{s.NomadToken, s.ConsulToken} {
		if strings.Contains(string(b), secret) {
			t.Error("stack.json holds a management token")
		}
	}
	loaded, err := localstack.Load(s.Dir)
	if err != nil || loaded.NomadToken != s.NomadToken || loaded.ConsulToken != s.ConsulToken {
		t.Errorf("Load(%s) did not read back the stack's tokens: %v", s.Dir, err)
	}
}

// The operator's token that make up prints for the Nomad UI has the
// operator's policy and nothing more, is kept (0600) across ups, and is made
// again when Nomad no longer knows it.
func TestOperatorTokenIsKeptAndMadeAgainWhenUnknown(t *testing.T) {
	t.Parallel()
	// Its own stack: it revokes the token the package stack's tests use.
	s := stacktest.StartOwn(t)
	rules, err := os.ReadFile(filepath.Join(imagetest.RepoRoot(t), "deployer", "policies", "nomad-operator.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	token := func() string {
		t.Helper()
		file, err := s.OperatorToken(ctx, string(rules))
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", file, fi, err)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		tok := strings.TrimSpace(string(b))
		stacktest.Secret(t, s, "operator's Nomad token", tok)
		return tok
	}
	first := token()
	if again := token(); again != first {
		t.Error("a second up made another operator token")
	}
	c, err := nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: first})
	if err != nil {
		t.Fatal(err)
	}
	self, _, err := c.ACLTokens().Self(nil)
	if err != nil || self.Type != "client" || len(self.Policies) != 1 || self.Policies[0] != "counter-operator" {
		t.Fatalf("the operator token: %+v %v; want a client token with policy counter-operator", self, err)
	}
	// Only a management token lists the tokens.
	if _, _, err := c.ACLTokens().List(nil); err == nil {
		t.Error("the operator token lists Nomad's tokens: it manages Nomad")
	}
	if _, _, err := c.Jobs().List(nil); err != nil {
		t.Errorf("the operator token cannot list jobs: %v", err)
	}

	nc, _ := stacktest.Clients(t, s)
	if _, err := nc.ACLTokens().Delete(self.AccessorID, nil); err != nil {
		t.Fatal(err)
	}
	if again := token(); again == first || again == "" {
		t.Error("a token Nomad no longer knows was kept")
	}
}

// make up OPEN=1's stack: ACLs off, so anyone who reaches Nomad and Consul
// may use them, Prometheus among them; and its data is never resumed by a stack with ACLs on
// (nor the other way round), even after make down.
func TestOpenStackHasNoACLsAndKeepsItsKind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := ownConfig(t)
	cfg.Open = true
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.ACL || s.NomadToken != "" {
		t.Errorf("open stack: ACL %v, a Nomad token set %v", s.ACL, s.NomadToken != "")
	}
	anonNomad, _ := nomad.NewClient(&nomad.Config{Address: s.NomadAddr})
	if _, _, err := anonNomad.Jobs().List(nil); err != nil {
		t.Errorf("Nomad without a token on the open stack: %v", err)
	}
	anonConsul, _ := consul.NewClient(&consul.Config{Address: s.ConsulAddr})
	if _, err := anonConsul.KV().Put(&consul.KVPair{Key: "counter/releases/x", Value: []byte("y")}, nil); err != nil {
		t.Errorf("Consul without a token on the open stack: %v", err)
	}
	// Prometheus finds the instances through Consul with no token.
	if s.PrometheusToken() != "" {
		t.Error("the open stack made a Prometheus token")
	}
	scrapesByAllocation(t, s, anonConsul)
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	secure := cfg
	secure.Open, secure.Resume = false, true
	if s, err := localstack.Start(ctx, secure); err == nil {
		_ = s.Stop(ctx)
		t.Fatal("the open stack's data was started again with ACLs on")
	} else if !strings.Contains(err.Error(), "make clean") {
		t.Errorf("the refusal does not say how to go on: %v", err)
	}
}

// ownConfig is the Config of a stack of the test's own: its folder, the
// pinned binaries, and a block of ports held until the test's cleanups (a
// Down among them) have run.
func ownConfig(t *testing.T) localstack.Config {
	t.Helper()
	bin := stacktest.Binaries(t)
	lo, hi, release, err := localstack.ReserveDynamicRange()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return localstack.Config{Dir: t.TempDir(), Bin: bin, Ports: localstack.Ports{MinDynamic: lo, MaxDynamic: hi}}
}
