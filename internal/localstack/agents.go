package localstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

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
			"dns": p.ConsulDNS, "grpc": -1, "grpc_tls": -1,
		},
		// The front door asks for passing instances only: a warning
		// instance gets no users' requests either.
		"dns_config": map[string]any{"only_passing": true},
		"log_level":  "INFO",
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

func (s *Stack) consulReady(ctx context.Context) error { return s.consulReadyAt(ctx, s.ConsulAddr) }

// consulReadyAt checks that the Consul agent at addr answers and knows a
// leader.
func (s *Stack) consulReadyAt(ctx context.Context, addr string) error {
	c, err := consul.NewClient(&consul.Config{Address: addr, Token: s.ConsulToken, HttpClient: s.httpClient()})
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

// nomadAgent is one Nomad agent of a stack: a server, a client, or, in the
// single-agent stack, both.
type nomadAgent struct {
	name       string // the node's name; "" keeps the host's
	ip, data   string
	consulAddr string
	// bootstrap is the number of servers to wait for; 0 for a client only.
	bootstrap int
	join      []string // the servers' serf addresses, for a server of many
	// servers are the RPC addresses a client of a cluster reaches.
	servers []string
	// client: the cgroup its tasks run under and the ports it gives them;
	// cgroup "" for a server only.
	cgroup           string
	minPort, maxPort int
}

// config renders the agent's configuration. It turns off the update check,
// the one call home an agent makes. The cloud fingerprinters are denied
// because this machine's AWS_CA_BUNDLE breaks the AWS one and the others
// probe link-local metadata addresses. Dangling-container GC is off so that
// stacks running side by side on one Docker engine leave each other's
// containers alone; containers are labelled with their node, for make down
// to find. The state is in data_dir, not -dev (in memory), so that job
// history survives a restart of the agent.
func (s *Stack) nomadAgentConfig(a nomadAgent) string {
	p := s.cfg.Ports
	var b strings.Builder
	if a.name != "" {
		fmt.Fprintf(&b, "name = %q\n", a.name)
	}
	fmt.Fprintf(&b, `data_dir  = %q
bind_addr = %q
log_level = "INFO"

disable_update_check        = true
disable_anonymous_signature = true

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
  http = %q
  rpc  = %q
  serf = %q
}
`, a.data, a.ip, p.NomadHTTP, p.NomadRPC, p.NomadSerf, a.ip, a.ip, a.ip)
	if a.bootstrap > 0 {
		tracked := s.cfg.JobTrackedVersions
		if tracked == 0 {
			tracked = DefaultJobTrackedVersions
		}
		fmt.Fprintf(&b, "\nserver {\n  enabled              = true\n  bootstrap_expect     = %d\n  job_tracked_versions = %d\n", a.bootstrap, tracked)
		if len(a.join) > 0 {
			fmt.Fprintf(&b, "  server_join {\n    retry_join     = [%s]\n    retry_interval = \"1s\"\n  }\n", quoted(a.join))
		}
		b.WriteString("}\n")
	}
	if a.cgroup != "" {
		b.WriteString("\nclient {\n  enabled           = true\n")
		if len(a.servers) > 0 {
			fmt.Fprintf(&b, "  servers           = [%s]\n", quoted(a.servers))
		}
		fmt.Fprintf(&b, `  network_interface = "lo"
  cgroup_parent     = %q
  min_dynamic_port  = %d
  max_dynamic_port  = %d
  options = {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}

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
`, a.cgroup, a.minPort, a.maxPort)
	}
	aclBlock, consulBody := s.nomadACL()
	fmt.Fprintf(&b, "\nconsul {\n  address = %q\n", a.consulAddr)
	if len(a.join) > 0 || len(a.servers) > 0 {
		// The agents of a cluster find each other from this file, not
		// through Consul: a Consul server restart must not cost Nomad its
		// peers.
		b.WriteString("  server_auto_join = false\n  client_auto_join = false\n")
	}
	b.WriteString(consulBody + "}\n" + aclBlock)
	return b.String()
}

func quoted(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// startNomadAgent writes a's configuration next to its data and starts it
// as the stack's process name.
func (s *Stack) startNomadAgent(name string, a nomadAgent) error {
	if err := os.MkdirAll(a.data, 0o755); err != nil {
		return err
	}
	file := filepath.Join(s.Dir, name+".hcl")
	if err := os.WriteFile(file, []byte(s.nomadAgentConfig(a)), 0o600); err != nil {
		return err
	}
	_, err := s.start(name, s.cfg.Bin.Nomad, "agent", "-config", file)
	return err
}

// startNomad starts the single-agent stack's Nomad: one server and one
// client in one agent.
func (s *Stack) startNomad() error {
	p := s.cfg.Ports
	return s.startNomadAgent("nomad", nomadAgent{
		ip: "127.0.0.1", data: filepath.Join(s.Dir, "nomad"),
		consulAddr: "127.0.0.1:" + strconv.Itoa(p.ConsulHTTP),
		bootstrap:  1,
		cgroup:     fmt.Sprintf("counter-nomad-%d", p.NomadHTTP),
		minPort:    p.MinDynamic, maxPort: p.MaxDynamic,
	})
}

func (s *Stack) nomadClient() (*nomad.Client, error) {
	return nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: s.NomadToken, HttpClient: s.httpClient()})
}

// nomadReady checks that the node is ready and its docker driver healthy,
// and records its ID.
func (s *Stack) nomadReady(ctx context.Context) error {
	id, err := s.readyNode(ctx, "")
	if err == nil {
		s.NodeID = id
	}
	return err
}

// readyNode returns the ID of the client node called name (any, for ""),
// once it is ready.
func (s *Stack) readyNode(ctx context.Context, name string) (string, error) {
	c, err := s.nomadClient()
	if err != nil {
		return "", err
	}
	nodes, _, err := c.Nodes().List((&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", err
	}
	for _, n := range nodes {
		if name == "" || n.Name == name {
			return n.ID, nodeReady(ctx, c, n)
		}
	}
	if name == "" {
		return "", fmt.Errorf("no client node registered yet")
	}
	return "", fmt.Errorf("client %s has not registered yet", name)
}

// nodeReady checks that node n is ready, its docker driver healthy and
// Consul fingerprinted.
func nodeReady(ctx context.Context, c *nomad.Client, n *nomad.NodeListStub) error {
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
	node, _, err := c.Nodes().Info(n.ID, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	if node.Attributes["consul.version"] == "" {
		return fmt.Errorf("node %s has not fingerprinted Consul yet", n.Name)
	}
	return nil
}

// removeContainers removes every container this stack's Nomad clients
// made, running or stopped: a client that stops leaves its tasks running,
// and Nomad keeps a stopped task's container until it collects the
// allocation.
func (s *Stack) removeContainers() error {
	var errs []error
	for _, id := range s.nodeIDs() {
		errs = append(errs, s.removeContainersOf(id))
	}
	return errors.Join(errs...)
}

// removeContainersOf removes the containers of Nomad node id, which the
// docker plugin labels with it. An engine that does not answer (it died
// with the machine) is said, not an error: its containers stopped with it.
func (s *Stack) removeContainersOf(id string) error {
	if id == "" {
		return nil
	}
	docker := s.cfg.Docker
	if docker == "" {
		docker = "docker"
	}
	label := "label=com.hashicorp.nomad.node_id=" + id
	out, err := exec.Command(docker, "ps", "-aq", "--filter", label).Output()
	if err != nil {
		if exec.Command(docker, "version", "--format", "{{.Server.Version}}").Run() != nil {
			s.say("the Docker engine does not answer, so the containers of Nomad node %s stopped with it; "+
				"once it runs, docker ps -a --filter %s lists any left", id, label)
			return nil
		}
		return fmt.Errorf("list the containers of Nomad node %s: %w", id, err)
	}
	ids := strings.Fields(string(out))
	if len(ids) == 0 {
		return nil
	}
	s.say("removing %d container(s) of Nomad node %s", len(ids), id)
	if out, err := exec.Command(docker, append([]string{"rm", "-f"}, ids...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("remove the containers of Nomad node %s: %v: %s", id, err, out)
	}
	return nil
}
