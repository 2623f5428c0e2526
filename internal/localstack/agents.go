package localstack

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

func (s *Stack) startConsul() error {
	p := s.cfg.Ports
	cfg := map[string]any{
		"node_name":   "counter-local",
		"bind_addr":   "127.0.0.1",
		"client_addr": "127.0.0.1",
		"ports": map[string]int{
			"http": p.ConsulHTTP, "server": p.ConsulServer,
			"serf_lan": p.ConsulSerfLAN, "serf_wan": p.ConsulSerfWAN,
			"dns": -1, "grpc": -1, "grpc_tls": -1,
		},
		"log_level": "INFO",
		// A local stack makes no outside calls: no update check, no
		// anonymous signature sent with it.
		"disable_update_check":        true,
		"disable_anonymous_signature": true,
		// A single server with a data folder, not -dev (in memory), so that
		// the release snapshots survive a restart of the agent.
		"server":           true,
		"bootstrap_expect": 1,
		"data_dir":         filepath.Join(s.Dir, "consul"),
		"ui_config":        map[string]any{"enabled": true},
		// Every client of a loopback stack has one address: the Nomad
		// agent's templates and checks, the deployer, the tests. Consul's
		// default of 200 connections per address is a real cluster's.
		"limits": map[string]any{"http_max_conns_per_client": 2000},
	}
	if s.ACL {
		cfg["acl"] = s.consulACL()
	}
	file := filepath.Join(s.Dir, "consul.json")
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		return err
	}
	_, err := s.start("consul", s.cfg.Bin.Consul, "agent", "-config-file", file)
	return err
}

func (s *Stack) consulReady(ctx context.Context) error {
	c, err := s.consulClient()
	if err != nil {
		return err
	}
	leader, err := c.Status().LeaderWithQueryOptions((&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	if leader == "" {
		return fmt.Errorf("no leader elected yet")
	}
	return nil
}

func (s *Stack) startRedis() error { return s.startRedisAt("redis", "127.0.0.1") }

// envRedisAddr is the address of the Redis server the environments call
// host (Config.EnvRedis).
func (s *Stack) envRedisAddr(host string) string {
	return s.Hosts[host] + ":" + strconv.Itoa(s.Ports.Redis)
}

// startRedisAt starts a Redis server called name on ip, at the stack's
// Redis port, with its data in a folder of its own.
func (s *Stack) startRedisAt(name, ip string) error {
	dir := filepath.Join(s.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// An append-only file, so that the counter survives a restart.
	_, err := s.start(name, s.cfg.Bin.Redis,
		"--bind", ip, "--port", strconv.Itoa(s.cfg.Ports.Redis),
		"--dir", dir, "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no")
	return err
}

func (s *Stack) startRegistry() error {
	if s.cfg.Bin.Registry == "" {
		return nil
	}
	root := filepath.Join(s.Dir, "registry")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	file := filepath.Join(s.Dir, "registry.yml")
	conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, root, s.RegistryAddr)
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return err
	}
	_, err := s.start("registry", s.cfg.Bin.Registry, "serve", file)
	return err
}

// nomadConfig is the Nomad agent configuration. It turns off the update
// check, the one call home a dev agent makes. The cloud fingerprinters are
// denied because this machine's AWS_CA_BUNDLE breaks the AWS one and the
// others probe link-local metadata addresses. Dangling-container GC is off so
// that stacks running side by side on one Docker engine leave each other's
// containers alone.
const nomadConfig = `
data_dir  = %q
bind_addr = "127.0.0.1"
log_level = "INFO"

# A local stack makes no outside calls.
disable_update_check        = true
disable_anonymous_signature = true

# One server and one client in one agent, with its state in data_dir, not
# -dev (in memory), so that job history survives a restart of the agent.
server {
  enabled          = true
  bootstrap_expect = 1
}

# Every client of a loopback stack has one address (see consul.json).
limits {
  http_max_conns_per_client = 2000
}

ports {
  http = %d
  rpc  = %d
  serf = %d
}

advertise {
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}

client {
  enabled           = true
  network_interface = "lo"
  cgroup_parent     = %q
  min_dynamic_port  = %d
  max_dynamic_port  = %d
  options = {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}

consul {
  address = "127.0.0.1:%d"
%s}
%s
plugin "docker" {
  config {
    extra_labels = ["node_id", "job_name"]
    gc {
      dangling_containers {
        enabled = false
      }
    }
  }
}

plugin "raw_exec" {
  config {
    enabled = true
  }
}
`

func (s *Stack) startNomad() error {
	p := s.cfg.Ports
	data := filepath.Join(s.Dir, "nomad")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	file := filepath.Join(s.Dir, "nomad.hcl")
	aclBlock, consulBody := s.nomadACL()
	conf := fmt.Sprintf(nomadConfig, data, p.NomadHTTP, p.NomadRPC, p.NomadSerf,
		fmt.Sprintf("counter-nomad-%d", p.NomadHTTP), p.MinDynamic, p.MaxDynamic, p.ConsulHTTP, consulBody, aclBlock)
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		return err
	}
	_, err := s.start("nomad", s.cfg.Bin.Nomad, "agent", "-config", file)
	return err
}

func (s *Stack) nomadClient() (*nomad.Client, error) {
	return nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: s.NomadToken, HttpClient: s.httpClient()})
}

// nomadReady checks that the node is ready and its docker driver healthy.
func (s *Stack) nomadReady(ctx context.Context) error {
	c, err := s.nomadClient()
	if err != nil {
		return err
	}
	q := (&nomad.QueryOptions{}).WithContext(ctx)
	nodes, _, err := c.Nodes().List(q)
	if err != nil {
		return err
	}
	if len(nodes) == 0 {
		return fmt.Errorf("no client node registered yet")
	}
	n := nodes[0]
	if n.Status != nomad.NodeStatusReady {
		return fmt.Errorf("node %s is %s", n.Name, n.Status)
	}
	d, ok := n.Drivers["docker"]
	switch {
	case !ok || !d.Detected:
		return fmt.Errorf("docker driver not detected on node %s", n.Name)
	case !d.Healthy:
		return fmt.Errorf("docker driver unhealthy on node %s: %s", n.Name, d.HealthDescription)
	}
	// Jobs with Consul services and templates are constrained to nodes that
	// have fingerprinted Consul, which comes a moment after the node turns
	// ready: until then the scheduler cannot place them.
	node, _, err := c.Nodes().Info(n.ID, q)
	if err != nil {
		return err
	}
	if node.Attributes["consul.version"] == "" {
		return fmt.Errorf("node %s has not fingerprinted Consul yet", n.Name)
	}
	s.NodeID = n.ID
	return nil
}

// removeContainers removes every container this stack's Nomad client made,
// running or stopped: Nomad keeps a stopped task's container until it
// collects the allocation, and forgets allocations of purged jobs. The
// docker plugin labels each container with the node's ID. An engine that
// does not answer (it died with the machine) is said, not an error: its
// containers stopped with it.
func (s *Stack) removeContainers() error {
	if s.NodeID == "" {
		return nil
	}
	docker := s.cfg.Docker
	if docker == "" {
		docker = "docker"
	}
	label := "label=com.hashicorp.nomad.node_id=" + s.NodeID
	out, err := exec.Command(docker, "ps", "-aq", "--filter", label).Output()
	if err != nil {
		if exec.Command(docker, "version", "--format", "{{.Server.Version}}").Run() != nil {
			s.say("the Docker engine does not answer, so the containers of Nomad node %s stopped with it; "+
				"once it runs, docker ps -a --filter %s lists any left", s.NodeID, label)
			return nil
		}
		return fmt.Errorf("list the containers of Nomad node %s: %w", s.NodeID, err)
	}
	ids := strings.Fields(string(out))
	if len(ids) == 0 {
		return nil
	}
	s.say("removing %d container(s) of Nomad node %s", len(ids), s.NodeID)
	if out, err := exec.Command(docker, append([]string{"rm", "-f"}, ids...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("remove the containers of Nomad node %s: %v: %s", s.NodeID, err, out)
	}
	return nil
}

// drainNomad stops and purges every job so that their containers stop, and
// waits for the allocations to finish.
func (s *Stack) drainNomad(ctx context.Context) error {
	c, err := s.nomadClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	q := (&nomad.QueryOptions{Namespace: "*"}).WithContext(ctx)
	allocs, _, err := c.Allocations().List(q)
	if err != nil {
		return err
	}
	jobs, _, err := c.Jobs().List(q)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		w := (&nomad.WriteOptions{Namespace: j.Namespace}).WithContext(ctx)
		if _, _, err := c.Jobs().Deregister(j.ID, true, w); err != nil {
			return fmt.Errorf("stop job %s: %w", j.ID, err)
		}
	}
	for {
		running := 0
		for _, a := range allocs {
			cur, _, err := c.Allocations().Info(a.ID, (&nomad.QueryOptions{Namespace: a.Namespace}).WithContext(ctx))
			if err != nil || cur.ClientTerminalStatus() {
				continue
			}
			running++
		}
		if running == 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return ctx.Err()
}
