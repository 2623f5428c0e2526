package localstack

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// Node is one machine of a cluster stack (Config.Cluster): a loopback
// address of its own, where its agents listen at the stack's ports. A server
// node runs a Consul server and a Nomad server; a client node runs a Nomad
// client and the Consul client agent it registers its services with, as on a
// real cluster, where two Nomad clients never share a Consul agent (each
// removes the services it did not register).
type Node struct {
	Name       string `json:"name"` // server-1, client-1, ...
	IP         string `json:"ip"`
	Server     bool   `json:"server"`
	NomadAddr  string `json:"nomad_addr"`  // http://IP:PORT
	ConsulAddr string `json:"consul_addr"` // IP:PORT
	// NodeID is a client node's Nomad node ID, once it registered.
	NodeID string `json:"nomad_node_id,omitempty"`
}

// Agent names of a node's processes, as recorded in Dir/NAME.pid and logged
// to Dir/NAME.log.
func (n Node) NomadAgent() string  { return "nomad-" + n.Name }
func (n Node) ConsulAgent() string { return "consul-" + n.Name }

// clusterNodes are the machines of a cluster stack. 127.0.1.0/24 keeps clear
// of the environments' Redis servers (127.0.0.2, 127.0.0.3); every address
// of 127.0.0.0/8 reaches lo on Linux.
var clusterNodes = []struct {
	name, ip string
	server   bool
}{
	{"server-1", "127.0.1.1", true},
	{"server-2", "127.0.1.2", true},
	{"server-3", "127.0.1.3", true},
	{"client-1", "127.0.1.11", false},
	{"client-2", "127.0.1.12", false},
}

// clusterAgents are the process names of a cluster stack, in start order.
func clusterAgents() (consuls, nomads []string) {
	for _, n := range clusterNodes {
		consuls = append(consuls, "consul-"+n.name)
		nomads = append(nomads, "nomad-"+n.name)
	}
	return consuls, nomads
}

func (s *Stack) initCluster() {
	p := s.cfg.Ports
	for _, n := range clusterNodes {
		s.Nodes = append(s.Nodes, Node{
			Name: n.name, IP: n.ip, Server: n.server,
			NomadAddr:  "http://" + net.JoinHostPort(n.ip, strconv.Itoa(p.NomadHTTP)),
			ConsulAddr: net.JoinHostPort(n.ip, strconv.Itoa(p.ConsulHTTP)),
		})
	}
	// Clients reach the cluster through the first server; any server
	// answers (a follower forwards to the leader).
	s.NomadAddr, s.ConsulAddr = s.Nodes[0].NomadAddr, s.Nodes[0].ConsulAddr
}

// Node returns the cluster node called name.
func (s *Stack) Node(name string) (Node, bool) {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

func (s *Stack) servers() (out []Node) {
	for _, n := range s.Nodes {
		if n.Server {
			out = append(out, n)
		}
	}
	return out
}

// clientRange is the part of the stack's dynamic port range that client
// node i (0, 1, ...) gives its allocations. Nomad's allocations take the
// addresses of the interface (lo has only 127.0.0.1), so the clients split
// the range rather than both handing out the same port.
func (s *Stack) clientRange(i, clients int) (lo, hi int) {
	p := s.cfg.Ports
	size := (p.MaxDynamic - p.MinDynamic + 1) / clients
	lo = p.MinDynamic + i*size
	return lo, lo + size - 1
}

// startClusterConsul starts the Consul agent of node n: a server of three,
// or a client agent joined to them.
func (s *Stack) startClusterConsul(n Node) error {
	p := s.cfg.Ports
	var join []string
	for _, srv := range s.servers() {
		if srv.Name != n.Name {
			join = append(join, net.JoinHostPort(srv.IP, strconv.Itoa(p.ConsulSerfLAN)))
		}
	}
	cfg := map[string]any{
		"node_name":   n.Name,
		"bind_addr":   n.IP,
		"client_addr": n.IP,
		"ports": map[string]int{
			"http": p.ConsulHTTP, "server": p.ConsulServer,
			"serf_lan": p.ConsulSerfLAN, "serf_wan": p.ConsulSerfWAN,
			"dns": p.ConsulDNS, "grpc": -1, "grpc_tls": -1,
		},
		// The front door asks every agent (consulDNSAddrs).
		"dns_config":                  map[string]any{"only_passing": true},
		"retry_join":                  join,
		"retry_interval":              "1s",
		"log_level":                   "INFO",
		"disable_update_check":        true,
		"disable_anonymous_signature": true,
		"data_dir":                    filepath.Join(s.Dir, "consul-"+n.Name),
		"limits":                      map[string]any{"http_max_conns_per_client": 2000},
		// Many agents on one machine: leave a departing agent's name free
		// for its restart at once.
		"leave_on_terminate": false,
	}
	if n.Server {
		cfg["server"] = true
		cfg["bootstrap_expect"] = len(s.servers())
		cfg["ui_config"] = map[string]any{"enabled": true}
	}
	if s.ACL {
		cfg["acl"] = s.consulACL()
	}
	file := filepath.Join(s.Dir, "consul-"+n.Name+".json")
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		return err
	}
	_, err := s.start(n.ConsulAgent(), s.cfg.Bin.Consul, "agent", "-config-file", file)
	return err
}

// startClusterNomad starts the Nomad agent of node n: a server of three, or
// client number i of them, which registers its services with its node's own
// Consul agent.
func (s *Stack) startClusterNomad(n Node, client int) error {
	p := s.cfg.Ports
	a := nomadAgent{name: n.Name, ip: n.IP, data: filepath.Join(s.Dir, n.NomadAgent()), consulAddr: n.ConsulAddr}
	var serf, rpc []string
	for _, srv := range s.servers() {
		serf = append(serf, net.JoinHostPort(srv.IP, strconv.Itoa(p.NomadSerf)))
		rpc = append(rpc, net.JoinHostPort(srv.IP, strconv.Itoa(p.NomadRPC)))
	}
	if n.Server {
		a.bootstrap, a.join = len(serf), serf
	} else {
		a.servers, a.cgroup = rpc, fmt.Sprintf("counter-nomad-%d-%s", p.NomadHTTP, n.Name)
		a.minPort, a.maxPort = s.clientRange(client, len(s.Nodes)-len(serf))
	}
	return s.startNomadAgent(n.NomadAgent(), a)
}

// clusterComponents are the start functions of a cluster's agents, Consul's
// first so that Nomad finds its agent answering.
func (s *Stack) clusterComponents() (consuls, nomads []component) {
	client := 0
	for _, n := range s.Nodes {
		consuls = append(consuls, component{n.ConsulAgent(), func() error { return s.startClusterConsul(n) }})
		i := client
		if !n.Server {
			client++
		}
		nomads = append(nomads, component{n.NomadAgent(), func() error { return s.startClusterNomad(n, i) }})
	}
	return consuls, nomads
}

// clusterChecks are what each agent of a cluster must answer before the
// stack is up.
func (s *Stack) clusterChecks() []check {
	var checks []check
	for _, n := range s.Nodes {
		what := "Consul agent " + n.Name + " at " + n.ConsulAddr + " in a cluster with a leader"
		checks = append(checks, check{n.ConsulAgent(), what, func(ctx context.Context) error { return s.consulReadyAt(ctx, n.ConsulAddr) }})
	}
	for _, n := range s.Nodes {
		if n.Server {
			what := "Nomad server " + n.Name + " at " + n.NomadAddr + " in a cluster with a leader"
			checks = append(checks, check{n.NomadAgent(), what, func(ctx context.Context) error { return s.nomadServerReady(ctx, n) }})
		}
	}
	checks = append(checks, check{s.Nodes[0].NomadAgent(), "Nomad ACLs bootstrapped, and Consul trusting Nomad's workload identities", s.secure})
	for i, n := range s.Nodes {
		if !n.Server {
			what := "Nomad client " + n.Name + " ready with the docker driver"
			checks = append(checks, check{n.NomadAgent(), what, func(ctx context.Context) error { return s.nomadClientReady(ctx, i) }})
		}
	}
	return checks
}

// nomadServerReady checks that server n answers and knows a leader. The
// leader endpoint needs no token, so it answers before ACLs are
// bootstrapped.
func (s *Stack) nomadServerReady(ctx context.Context, n Node) error {
	_, err := s.nomadLeaderOf(ctx, n)
	return err
}

// nomadLeaderOf is the RPC address of the leader that server n knows.
func (s *Stack) nomadLeaderOf(ctx context.Context, n Node) (string, error) {
	c, err := nomad.NewClient(&nomad.Config{Address: n.NomadAddr, HttpClient: s.httpClient()})
	if err != nil {
		return "", err
	}
	var leader string
	if _, err := c.Raw().Query("/v1/status/leader", &leader, (&nomad.QueryOptions{}).WithContext(ctx)); err != nil {
		return "", err
	}
	if leader == "" {
		return "", fmt.Errorf("no leader elected yet")
	}
	return leader, nil
}

// nomadServerCaughtUp checks that server n has applied what the leader had
// committed. A restarted server answers before it has replayed the log, and
// it resolves tokens from its own state: until it caught up, it refuses a
// token made since as unknown.
func (s *Stack) nomadServerCaughtUp(ctx context.Context, n Node) error {
	leader, err := s.nomadLeaderOf(ctx, n)
	if err != nil {
		return err
	}
	ip, _, _ := net.SplitHostPort(leader)
	for _, l := range s.Nodes {
		if l.IP != ip {
			continue
		}
		_, committed, err := s.raftIndexes(l)
		if err != nil {
			return fmt.Errorf("leader %s: %w", l.Name, err)
		}
		applied, _, err := s.raftIndexes(n)
		if err != nil {
			return err
		}
		if applied < committed {
			return fmt.Errorf("server %s has applied Raft index %d of the leader's %d", n.Name, applied, committed)
		}
		return nil
	}
	return fmt.Errorf("leader %q is none of the stack's servers", leader)
}

// raftIndexes are the last Raft index server n applied and the last it
// knows committed, from its agent's stats.
func (s *Stack) raftIndexes(n Node) (applied, committed uint64, err error) {
	c, err := nomad.NewClient(&nomad.Config{Address: n.NomadAddr, SecretID: s.NomadToken, HttpClient: s.httpClient()})
	if err != nil {
		return 0, 0, err
	}
	self, err := c.Agent().Self()
	if err != nil {
		return 0, 0, err
	}
	applied, err = strconv.ParseUint(self.Stats["raft"]["applied_index"], 10, 64)
	if err == nil {
		committed, err = strconv.ParseUint(self.Stats["raft"]["commit_index"], 10, 64)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("raft stats of %s: %w", n.Name, err)
	}
	return applied, committed, nil
}

// nomadClientReady checks that the client of s.Nodes[i] registered, is
// ready with a healthy docker driver and has fingerprinted Consul, and
// records its node ID.
func (s *Stack) nomadClientReady(ctx context.Context, i int) error {
	id, err := s.readyNode(ctx, s.Nodes[i].Name)
	if err == nil {
		s.Nodes[i].NodeID = id
	}
	return err
}

// clusterHealthy reports whether every agent of a cluster stack answers.
func (s *Stack) clusterHealthy(ctx context.Context) error {
	for i, n := range s.Nodes {
		if err := s.consulReadyAt(ctx, n.ConsulAddr); err != nil {
			return fmt.Errorf("consul %s: %w", n.Name, err)
		}
		if n.Server {
			// Caught up implies a leader: one look at it serves both.
			if err := s.nomadServerCaughtUp(ctx, n); err != nil {
				return fmt.Errorf("nomad %s: %w", n.Name, err)
			}
		} else if err := s.nomadClientReady(ctx, i); err != nil {
			return fmt.Errorf("nomad %s: %w", n.Name, err)
		}
	}
	return nil
}

// nodeIDs are the Nomad node IDs of the stack's clients, whose containers
// carry them as labels: those recorded in stack.json, and those the
// clients' data folders keep (client/client-id), so that a stack that
// stopped before it recorded them leaves no container either.
func (s *Stack) nodeIDs() []string {
	ids := []string{}
	add := func(id string) {
		if id = strings.TrimSpace(id); id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	add(s.NodeID)
	for _, n := range s.Nodes {
		add(n.NodeID)
	}
	files, _ := filepath.Glob(filepath.Join(s.Dir, "nomad*", "client", "client-id"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			add(string(b))
		}
	}
	return ids
}

// Kill stops one agent of the stack at once, with SIGKILL, as a machine
// that loses power does, and the processes it ran (a Nomad client's
// loggers); agent is a Node's NomadAgent or ConsulAgent. Restart starts it
// again with its data as it was.
func (s *Stack) Kill(agent string) error {
	p := s.proc(agent)
	if p == nil {
		return fmt.Errorf("no agent %q in this stack", agent)
	}
	kill := func(sig syscall.Signal) { _ = syscall.Kill(p.pid, syscall.SIGKILL) }
	if !terminate(kill, p.alive, 5*time.Second) {
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.name, p.pid)
	}
	// The group's stragglers go the same way.
	return p.stop(0)
}

// Restart starts an agent that Kill stopped, with its config and data as
// they were.
func (s *Stack) Restart(agent string) error {
	p := s.proc(agent)
	if p == nil {
		return fmt.Errorf("no agent %q in this stack", agent)
	}
	if p.alive() {
		return fmt.Errorf("%s (pid %d) still runs", p.name, p.pid)
	}
	s.procs = slices.DeleteFunc(s.procs, func(q *proc) bool { return q == p })
	_, err := s.start(p.name, p.bin, p.args...)
	return err
}

// KillNode stops a client node as a machine that dies does: its Nomad client
// and Consul agent killed, and the containers it ran gone with them.
func (s *Stack) KillNode(name string) error {
	n, ok := s.Node(name)
	if !ok || n.Server {
		return fmt.Errorf("no client node %q in this stack", name)
	}
	for _, agent := range []string{n.NomadAgent(), n.ConsulAgent()} {
		if err := s.Kill(agent); err != nil {
			return err
		}
	}
	return s.removeContainersOf(n.NodeID)
}
