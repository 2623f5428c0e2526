// Package localstack runs the project's local HashiCorp stack on loopback: a
// single-node Consul server, a Nomad server and client in one agent wired to
// it with the docker and raw_exec drivers, a Redis server and a Docker
// registry, each keeping its data under the state folder; or, with
// Config.Cluster, three servers of each and two client nodes in place of
// the two agents (cluster.go). `make up` runs it
// detached with state under .stack/; integration tests run a private one per
// test package with free ports and temporary state.
package localstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kodekloud/counter/internal/redisprobe"
)

// startOrder names the processes a stack may record, in start order; Stop
// goes the other way. dockerd is recorded by scripts/dockerd-up when `make
// up` had to start the engine.
var startOrder = func() []string {
	consuls, nomads := clusterAgents()
	order := append([]string{"dockerd", "consul"}, consuls...)
	order = append(order, "redis", "redis-test", "redis-prod", "registry", "nomad")
	// The front door last, so that it stops first: users' requests stop
	// coming before the instances go.
	// Prometheus after it: it starts once the rest is ready (its Consul
	// token needs Consul), and of the servers it stops first.
	return append(append(order, nomads...), "haproxy", "prometheus")
}()

// envRedis are the Redis servers of the test and prod environments, which
// Config.EnvRedis adds: each on its own loopback address, at the port of
// dev's, under the host name its environment file gives.
var envRedis = []struct{ name, host, ip string }{
	{"redis-test", "redis_db_test", "127.0.0.2"},
	{"redis-prod", "redis_db_prod", "127.0.0.3"},
}

// Binaries are the programs the stack runs. Registry, HAProxy and
// Prometheus are optional.
type Binaries struct {
	Nomad, Consul, Redis, Registry, HAProxy, Prometheus string
}

// Ports are the loopback ports the stack listens on; zero picks a free one.
type Ports struct {
	NomadHTTP, NomadRPC, NomadSerf                         int
	ConsulHTTP, ConsulServer, ConsulSerfLAN, ConsulSerfWAN int
	Redis, Registry                                        int
	// ConsulDNS is the Consul agent's DNS port, which the front door asks;
	// FrontDoorStats is HAProxy's stats page and Prometheus exporter.
	ConsulDNS, FrontDoorStats int
	// Prometheus is Prometheus's HTTP API and UI.
	Prometheus int
	// MinDynamic..MaxDynamic is the range Nomad gives allocations' dynamic
	// ports from. Stacks running side by side need ranges that differ.
	MinDynamic, MaxDynamic int
}

// Config says where and how to run a stack.
type Config struct {
	Dir      string // state: configs, data, logs, pid files
	Bin      Binaries
	Ports    Ports
	Detach   bool          // leave the processes running after this process exits
	Progress io.Writer     // what the stack waits for; nil for silence
	Timeout  time.Duration // for each component to become healthy; 0 means 90s
	Docker   string        // the docker CLI, to remove Nomad's containers; "" means docker
	// Resume keeps the components of the stack recorded in Dir that still
	// run and starts only the others, with their data as it was (Ports must
	// be the recorded stack's).
	Resume bool
	// EnvRedis also runs the test and prod environments' Redis servers,
	// which their files call redis_db_test and redis_db_prod: Stack.Hosts
	// maps those names to their addresses.
	EnvRedis bool
	// Open runs Consul and Nomad with ACLs off. By default they are on and
	// deny what no token allows; the management tokens are in Dir/secrets.
	Open bool
	// Cluster runs three Consul servers, three Nomad servers and two client
	// nodes, each on a loopback address of its own (Stack.Nodes), instead
	// of one Consul server and one Nomad agent that is server and client.
	Cluster bool
	// Environments is the folder of environment files whose url the front
	// door serves, one frontend each (FrontDoors); "" runs no front door.
	Environments string
	// JobTrackedVersions is the Nomad servers' job_tracked_versions: how
	// many untagged versions of a job, and how many job submissions
	// (source and variables, tagged or not), Nomad keeps. 0 means
	// DefaultJobTrackedVersions; a test sets a small one to see the limit.
	JobTrackedVersions int
}

// DefaultJobTrackedVersions is the stack's job_tracked_versions, set
// explicitly rather than left at Nomad's 6: it is as many as the
// `deployer gc -keep 10` the docs suggest keeps tagged, so every release gc
// keeps also keeps its submission, from which a rollback restores a config
// snapshot edited or deleted by hand. Each version and submission is a copy
// of a job of a few kilobytes in every server's memory and Raft snapshots,
// so ten is cheap; see docs/stack.md.
const DefaultJobTrackedVersions = 10

// Stack is a running local stack.
type Stack struct {
	// Addresses of the running components, as clients want them.
	NomadAddr    string `json:"nomad_addr"`    // http://127.0.0.1:PORT
	ConsulAddr   string `json:"consul_addr"`   // 127.0.0.1:PORT (CONSUL_HTTP_ADDR)
	RedisAddr    string `json:"redis_addr"`    // 127.0.0.1:PORT
	RegistryAddr string `json:"registry_addr"` // 127.0.0.1:PORT, "" without a registry
	// FrontDoors are the environments HAProxy serves, at the addresses
	// their files' url names; FrontDoorStats its stats page (/metrics:
	// Prometheus).
	FrontDoors     []FrontDoor `json:"front_doors,omitempty"`
	FrontDoorStats string      `json:"front_door_stats,omitempty"`
	// PrometheusAddr is Prometheus's API and UI (http://127.0.0.1:PORT),
	// which scrapes every allocation and the front door; "" without it.
	PrometheusAddr string `json:"prometheus_addr,omitempty"`
	Dir            string `json:"dir"`
	Ports          Ports  `json:"ports"`
	NodeID         string `json:"nomad_node_id"` // labels the containers Nomad runs
	// Nodes are the machines of a cluster stack (Config.Cluster); NomadAddr
	// and ConsulAddr are then the first server's.
	Nodes []Node `json:"nodes,omitempty"`
	// Hosts maps the host names of the environments' Redis servers that
	// only this stack runs to their addresses (Config.EnvRedis).
	Hosts map[string]string `json:"hosts,omitempty"`
	// ACL says Consul and Nomad enforce ACLs; the management tokens are
	// then NomadToken and ConsulToken, kept in Dir/secrets, never in
	// stack.json.
	ACL         bool   `json:"acl"`
	NomadToken  string `json:"-"`
	ConsulToken string `json:"-"`
	// The deployer's own tokens, once DeployerTokens made them.
	DeployerNomadToken  string `json:"-"`
	DeployerConsulToken string `json:"-"`
	// dnsToken is the secret the Consul agent answers DNS questions
	// with (the front door's); kept in Dir/secrets.
	dnsToken string
	// promToken is the secret of Prometheus's Consul token (prometheus.go);
	// kept in Dir/secrets.
	promToken string

	cfg   Config
	procs []*proc

	// httpOnce and http give every API call of the stack one connection
	// pool. A client per poll leaves a keep-alive connection behind each
	// time, and Nomad refuses a client's 101st connection: a node slow to
	// become ready (a fresh dockerd) then never does.
	httpOnce sync.Once
	http     *http.Client
}

// Start starts every component and waits until each is healthy. On failure it
// stops what it started and returns an error naming the component and its
// log file.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 90 * time.Second
	}
	if cfg.JobTrackedVersions < 0 {
		return nil, fmt.Errorf("job_tracked_versions %d: Nomad wants 1 or more (0 for the stack's %d)", cfg.JobTrackedVersions, DefaultJobTrackedVersions)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := cfg.Ports.fill(); err != nil {
		return nil, err
	}
	s := &Stack{
		NomadAddr:  "http://127.0.0.1:" + strconv.Itoa(cfg.Ports.NomadHTTP),
		ConsulAddr: "127.0.0.1:" + strconv.Itoa(cfg.Ports.ConsulHTTP),
		RedisAddr:  "127.0.0.1:" + strconv.Itoa(cfg.Ports.Redis),
		Dir:        cfg.Dir,
		Ports:      cfg.Ports,
		cfg:        cfg,
	}
	if cfg.Cluster {
		s.initCluster()
	}
	if cfg.Bin.Registry != "" {
		s.RegistryAddr = "127.0.0.1:" + strconv.Itoa(cfg.Ports.Registry)
	}
	if cfg.Bin.Prometheus != "" {
		s.PrometheusAddr = "http://127.0.0.1:" + strconv.Itoa(cfg.Ports.Prometheus)
	}
	if cfg.Environments != "" && cfg.Bin.HAProxy != "" {
		if s.FrontDoors, err = FrontDoors(cfg.Environments); err != nil {
			return nil, err
		}
		if len(s.FrontDoors) > 0 {
			s.FrontDoorStats = "127.0.0.1:" + strconv.Itoa(cfg.Ports.FrontDoorStats)
		}
	}
	if cfg.Resume {
		if err := CheckKind(dir, cfg.Open); err != nil {
			return nil, err
		}
	}
	if !cfg.Open {
		if err := s.makeTokens(); err != nil {
			return nil, err
		}
	}
	// running are the components a resumed stack keeps; a failed start
	// stops only what it started.
	running := map[string]*proc{}
	defer func() {
		if err != nil {
			s.procs = slices.DeleteFunc(s.procs, func(p *proc) bool { return running[p.name] == p })
			_ = s.Stop(context.Background())
		}
	}()
	if cfg.Resume {
		ps, err := recorded(dir)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			if p.name != "dockerd" && p.alive() {
				running[p.name] = p
			}
		}
	}
	for _, p := range s.listeners() {
		if running[p.component] != nil {
			continue
		}
		// A component that just died may hold its port a moment longer.
		for wait := 0; listening(p.addr) && cfg.Resume && wait < 100; wait++ {
			time.Sleep(100 * time.Millisecond)
		}
		if listening(p.addr) {
			return nil, fmt.Errorf("%s address %s is already in use: another stack (make down) or another program holds it", p.name, p.addr)
		}
	}

	var components, nomads []component
	if cfg.Cluster {
		components, nomads = s.clusterComponents()
	} else {
		components, nomads = []component{{"consul", s.startConsul}}, []component{{"nomad", s.startNomad}}
	}
	components = append(components, component{"redis", s.startRedis})
	if cfg.EnvRedis {
		s.Hosts = map[string]string{}
		for _, r := range envRedis {
			s.Hosts[r.host] = r.ip
			components = append(components, component{r.name, func() error { return s.startRedisAt(r.name, r.ip) }})
		}
	}
	components = append(components, component{"registry", s.startRegistry})
	components = append(components, nomads...)
	components = append(components, component{"haproxy", s.startFrontDoor})
	for _, c := range components {
		if p := running[c.name]; p != nil {
			fmt.Fprintf(cfg.Progress, "keeping %s (pid %d), which still runs\n", c.name, p.pid)
			s.procs = append(s.procs, p)
			continue
		}
		if cfg.Resume {
			fmt.Fprintf(cfg.Progress, "starting %s again, with its data as it was\n", c.name)
		}
		if err := c.start(); err != nil {
			return nil, err
		}
	}
	if err := s.writeState(); err != nil {
		return nil, err
	}

	for _, c := range s.checks() {
		p := s.proc(c.name)
		if p == nil {
			continue
		}
		if err := s.wait(ctx, p, c.what, c.ready); err != nil {
			return nil, err
		}
	}
	if err := s.startLast(ctx, running); err != nil {
		return nil, err
	}
	// Again, now with the Nomad node's ID that make down needs.
	if err := s.writeState(); err != nil {
		return nil, err
	}
	return s, nil
}

// startLast starts Prometheus once everything else is ready (its token
// needs Consul; see startPrometheus), or keeps the one that still runs.
func (s *Stack) startLast(ctx context.Context, running map[string]*proc) error {
	if s.PrometheusAddr == "" {
		return nil
	}
	if p := running["prometheus"]; p != nil {
		fmt.Fprintf(s.cfg.Progress, "keeping prometheus (pid %d), which still runs\n", p.pid)
		s.procs = append(s.procs, p)
		// Its token may be the one of a restored backup's ACLs: make it
		// if Consul does not know it.
		if err := s.grantPrometheus(ctx); err != nil {
			return err
		}
	} else {
		if s.cfg.Resume {
			fmt.Fprintf(s.cfg.Progress, "starting prometheus again, with its data as it was\n")
		}
		if err := s.startPrometheus(ctx); err != nil {
			return err
		}
	}
	return s.wait(ctx, s.proc("prometheus"), "Prometheus at "+s.PrometheusAddr+" (scraping every allocation through Consul)", s.prometheusReady)
}

// component is a process of the stack and how to start it.
type component struct {
	name  string
	start func() error
}

// check is what a process of the stack must answer before the stack is up.
type check struct {
	name, what string
	ready      func(context.Context) error
}

// checks are the stack's readiness checks, in the order they are waited
// for; a check whose process the stack does not run is passed over.
func (s *Stack) checks() []check {
	var checks []check
	if !s.cfg.Cluster {
		checks = append(checks, check{"consul", "Consul leader at " + s.ConsulAddr, s.consulReady})
	}
	checks = append(checks, []check{
		{"redis", "Redis PING at " + s.RedisAddr, func(ctx context.Context) error { return pingRedis(ctx, s.RedisAddr) }},
		{"redis-test", "Redis PING at " + s.envRedisAddr("redis_db_test"), func(ctx context.Context) error { return pingRedis(ctx, s.envRedisAddr("redis_db_test")) }},
		{"redis-prod", "Redis PING at " + s.envRedisAddr("redis_db_prod"), func(ctx context.Context) error { return pingRedis(ctx, s.envRedisAddr("redis_db_prod")) }},
		{"registry", "Docker registry at " + s.RegistryAddr, s.registryReady},
	}...)
	if s.cfg.Cluster {
		checks = append(checks, s.clusterChecks()...)
	} else {
		checks = append(checks,
			check{"nomad", "Nomad ACLs bootstrapped, and Consul trusting Nomad's workload identities", s.secure},
			check{"nomad", "Nomad node ready with the docker driver at " + s.NomadAddr, s.nomadReady})
	}
	return append(checks, check{"haproxy", "the front door (HAProxy) at " + s.frontDoorAddrs() + ", stats at " + s.FrontDoorStats, s.frontDoorReady})
}

// listeners are the addresses the stack's agents and Redis take, which
// nothing else may hold when it starts.
func (s *Stack) listeners() []struct{ name, component, addr string } {
	type l = struct{ name, component, addr string }
	p := s.cfg.Ports
	at := func(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
	out := []l{{"Redis", "redis", at("127.0.0.1", p.Redis)}}
	for _, d := range s.FrontDoors {
		out = append(out, l{"the front door of " + d.Env, "haproxy", d.Addr})
	}
	if s.FrontDoorStats != "" {
		out = append(out, l{"the front door's stats", "haproxy", s.FrontDoorStats})
	}
	if s.PrometheusAddr != "" {
		out = append(out, l{"Prometheus", "prometheus", strings.TrimPrefix(s.PrometheusAddr, "http://")})
	}
	if !s.cfg.Cluster {
		return append(out, l{"Consul HTTP", "consul", at("127.0.0.1", p.ConsulHTTP)}, l{"Nomad HTTP", "nomad", at("127.0.0.1", p.NomadHTTP)})
	}
	for _, n := range s.Nodes {
		out = append(out, l{"Consul HTTP of " + n.Name, n.ConsulAgent(), at(n.IP, p.ConsulHTTP)}, l{"Nomad HTTP of " + n.Name, n.NomadAgent(), at(n.IP, p.NomadHTTP)})
	}
	return out
}

func (s *Stack) proc(name string) *proc {
	for _, p := range s.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// wait polls ready until it succeeds, the process dies or time runs out. The
// error quotes 40 lines of the log: Nomad buffers its log until it is up, so
// a start-up error it prints comes before the buffered lines, not after.
func (s *Stack) wait(ctx context.Context, p *proc, what string, ready func(context.Context) error) error {
	fmt.Fprintf(s.cfg.Progress, "waiting for %s (log: %s)\n", what, p.log)
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var last error
	for {
		if last = ready(ctx); last == nil {
			fmt.Fprintf(s.cfg.Progress, "  %s ready after %.1fs\n", p.name, time.Since(start).Seconds())
			return nil
		}
		if !p.alive() {
			return fmt.Errorf("%s exited before it was ready: %v\nlast lines of %s:\n%s", p.name, last, p.log, tail(p.log, 40))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %v\nlast lines of %s:\n%s", p.name, time.Since(start).Round(time.Second), last, p.log, tail(p.log, 40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// CheckKind refuses to start agents with ACLs set otherwise (open) than
// they were on the data they keep in dir: that data holds their ACL set-up
// (bootstrapped, tokens, policies) or none, which agents of the other kind
// would start on and misread. The data outlives make down; the management
// tokens in dir/secrets say which kind made it.
func CheckKind(dir string, open bool) error {
	data := false
	for _, pattern := range []string{"consul", "consul-*"} {
		matches, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, m := range matches {
			if fi, err := os.Stat(m); err == nil && fi.IsDir() {
				data = true
			}
		}
	}
	if !data {
		return nil
	}
	_, consulToken := TokenFiles(dir)
	_, err := os.Stat(consulToken)
	acl := err == nil
	if acl == !open {
		return nil
	}
	kind := map[bool]string{true: "ACLs on", false: "ACLs off (-open, OPEN=1)"}
	return fmt.Errorf("the agents' data in %s was made with %s, and this start asks for %s: "+
		"stop the stack and delete its data (make clean), or start it as it was", dir, kind[acl], kind[!open])
}

// writeState records the stack's addresses for `make down` and for the
// commands that print them.
func (s *Stack) writeState() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.Dir, "stack.json"), b, 0o644)
}

// Load reads the state of the stack recorded in dir by a detached Start.
func Load(dir string) (*Stack, error) {
	b, err := os.ReadFile(filepath.Join(dir, "stack.json"))
	if err != nil {
		return nil, err
	}
	s := &Stack{}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "stack.json"), err)
	}
	if s.ACL {
		if s.NomadToken, s.ConsulToken, err = readTokens(dir); err != nil {
			return nil, err
		}
		s.readDeployerTokens()
	}
	return s, nil
}

// Env returns the environment variables the deployer reads to reach this
// stack: with ACLs on, its own tokens once DeployerTokens made them (the
// management tokens until then).
func (s *Stack) Env() []string {
	env := []string{"NOMAD_ADDR=" + s.NomadAddr, "CONSUL_HTTP_ADDR=" + s.ConsulAddr}
	if len(s.Hosts) > 0 {
		var hosts []string
		for _, h := range slices.Sorted(maps.Keys(s.Hosts)) {
			hosts = append(hosts, h+":"+s.Hosts[h])
		}
		env = append(env, "COUNTER_EXTRA_HOSTS="+strings.Join(hosts, ","))
	}
	switch {
	case s.DeployerNomadToken != "":
		env = append(env, "NOMAD_TOKEN="+s.DeployerNomadToken, "CONSUL_HTTP_TOKEN="+s.DeployerConsulToken)
	case s.ACL:
		env = append(env, "NOMAD_TOKEN="+s.NomadToken, "CONSUL_HTTP_TOKEN="+s.ConsulToken)
	}
	if s.RegistryAddr != "" {
		env = append(env, "COUNTER_REGISTRY="+s.RegistryAddr)
	}
	if s.PrometheusAddr != "" {
		env = append(env, "PROMETHEUS_ADDR="+s.PrometheusAddr)
	}
	return env
}

// Stop stops each process the stack started, and nothing else, and deletes
// nothing: the jobs, their versions and their allocations stay in Nomad's
// data, as a real cluster keeps them in its Raft log across restarts, and
// the next Start on the folder brings the allocations back. The Nomad agents
// that run tasks go first: a client that stops leaves its tasks' containers
// running, so those are removed next, while the engine still answers (the
// restarted client finds them gone and runs its allocations again), and so
// are its raw_exec tasks (stopExecutors). Then the
// other processes go, newest first, and last a Docker engine the stack
// recorded.
func (s *Stack) Stop(_ context.Context) error {
	var errs []error
	stop := func(p *proc) {
		if err := p.stop(15 * time.Second); err != nil {
			errs = append(errs, err)
		}
		_ = os.Remove(pidFile(s.Dir, p.name))
	}
	for i := len(s.procs) - 1; i >= 0; i-- {
		if p := s.procs[i]; runsTasks(p.name) {
			stop(p)
		}
	}
	if err := s.removeContainers(); err != nil {
		errs = append(errs, err)
	}
	if err := s.stopExecutors(); err != nil {
		errs = append(errs, err)
	}
	var engine *proc
	for i := len(s.procs) - 1; i >= 0; i-- {
		switch p := s.procs[i]; {
		case p.name == "dockerd":
			engine = p
		case !runsTasks(p.name):
			stop(p)
		}
	}
	if engine != nil {
		stop(engine)
	}
	s.procs = nil
	if err := unmountUnder(s.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// runsTasks reports whether the stack's process name is a Nomad client: the
// single-agent stack's Nomad, or a cluster's client node's.
func runsTasks(name string) bool {
	return name == "nomad" || strings.HasPrefix(name, "nomad-client-")
}

// say writes a line of progress, if anyone listens.
func (s *Stack) say(format string, args ...any) {
	if s.cfg.Progress != nil {
		fmt.Fprintf(s.cfg.Progress, format+"\n", args...)
	}
}

// Down stops the stack that a detached Start recorded in dir, and the Docker
// engine if scripts/dockerd-up started it there. Processes whose recorded pid
// now runs another program are left alone. A stack already down, or whose
// processes died with the machine, is no error: Down says what was gone.
func Down(ctx context.Context, dir string, progress io.Writer) error {
	return down(ctx, dir, progress, "")
}

func down(ctx context.Context, dir string, progress io.Writer, docker string) error {
	ps, err := recorded(dir)
	if err != nil {
		return err
	}
	s, err := Load(dir)
	if errors.Is(err, os.ErrNotExist) {
		s, err = &Stack{}, nil
	}
	if err != nil {
		return err
	}
	if s.Dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	s.procs = ps
	s.cfg.Progress, s.cfg.Docker = progress, docker
	if len(ps) == 0 {
		s.say("no process recorded in %s: the stack is already down", dir)
	}
	for _, p := range ps {
		if p.alive() {
			s.say("stopping %s (pid %d)", p.name, p.pid)
		} else {
			s.say("%s: already gone (pid %d is not running it)", p.name, p.pid)
		}
	}
	if err := s.Stop(ctx); err != nil {
		return err
	}
	// Nothing of this stack is left to reach: the next down has nothing to
	// do, and says so.
	if err := os.Remove(filepath.Join(dir, "stack.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// registryReady checks the registry's API root.
func (s *Stack) registryReady(ctx context.Context) error {
	return s.httpOK(ctx, "http://"+s.RegistryAddr+"/v2/")
}

func (s *Stack) httpClient() *http.Client {
	s.httpOnce.Do(func() {
		s.http = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	})
	return s.http
}

func (s *Stack) httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := s.httpClient().Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, res.Status)
	}
	return nil
}

// Healthy reports whether every component of a recorded stack answers.
func (s *Stack) Healthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if len(s.Nodes) > 0 {
		if err := s.clusterHealthy(ctx); err != nil {
			return err
		}
	} else {
		if err := s.consulReady(ctx); err != nil {
			return fmt.Errorf("consul: %w", err)
		}
		if err := s.nomadReady(ctx); err != nil {
			return fmt.Errorf("nomad: %w", err)
		}
	}
	if err := pingRedis(ctx, s.RedisAddr); err != nil {
		return err
	}
	for host := range s.Hosts {
		if err := pingRedis(ctx, s.envRedisAddr(host)); err != nil {
			return fmt.Errorf("%s: %w", host, err)
		}
	}
	if s.RegistryAddr != "" {
		if err := s.registryReady(ctx); err != nil {
			return fmt.Errorf("registry: %w", err)
		}
	}
	if s.FrontDoorStats != "" {
		if err := s.frontDoorUp(ctx); err != nil {
			return fmt.Errorf("front door: %w", err)
		}
	}
	if s.PrometheusAddr != "" {
		if err := s.prometheusReady(ctx); err != nil {
			return fmt.Errorf("prometheus: %w", err)
		}
	}
	return nil
}

// pingRedis reports whether the Redis at addr answers PING, over a
// connection of its own (redisprobe).
func pingRedis(ctx context.Context, addr string) error { return redisprobe.Ping(ctx, addr) }

// LogTail returns the last n lines of a component's log ("nomad", "consul",
// "redis", "registry").
func (s *Stack) LogTail(name string, n int) string {
	return tail(filepath.Join(s.Dir, name+".log"), n)
}

// FindBinaries returns the programs a stack runs: nomad, consul and
// prometheus from scripts/hashitools in the repository at root (which
// builds the pinned versions when needed, printing progress on stderr),
// redis-server, docker-registry and haproxy from PATH.
func FindBinaries(ctx context.Context, root string, stderr io.Writer) (Binaries, error) {
	var bin Binaries
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "hashitools"), "nomad", "consul", "prometheus")
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		return bin, fmt.Errorf("scripts/hashitools (builds nomad, consul and prometheus; try make tools): %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, path, _ := strings.Cut(line, "=")
		switch name {
		case "nomad":
			bin.Nomad = path
		case "consul":
			bin.Consul = path
		case "prometheus":
			bin.Prometheus = path
		}
	}
	return bin, bin.FindServers()
}

// FindServers fills in redis-server, docker-registry and haproxy from PATH.
func (b *Binaries) FindServers() error {
	var err error
	if b.Redis, err = exec.LookPath("redis-server"); err != nil {
		return fmt.Errorf("redis-server not found: install Debian's redis-server package")
	}
	if b.Registry, err = exec.LookPath("docker-registry"); err != nil {
		return fmt.Errorf("docker-registry not found: install Debian's docker-registry package")
	}
	if b.HAProxy, err = exec.LookPath("haproxy"); err != nil {
		return fmt.Errorf("haproxy not found: install Debian's haproxy package")
	}
	return nil
}
