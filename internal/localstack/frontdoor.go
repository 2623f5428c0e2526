package localstack

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/access"
	"github.com/kodekloud/counter/internal/environment"
)

// FrontDoor is one environment's entrance: HAProxy listens at Addr and
// sends each request to a passing instance of the Consul service Service,
// which it finds by DNS SRV through Consul, so the address users call stays
// the same while each release's instances move from port to port.
type FrontDoor struct {
	Env     string `json:"env"`     // the environment's name
	URL     string `json:"url"`     // as its file says
	Addr    string `json:"addr"`    // host:port HAProxy listens at
	Service string `json:"service"` // the Consul service, the job's name
	// Slots is how many instances HAProxy can hold at once: the running
	// ones and, during a release, their canaries and replacements.
	Slots int `json:"slots"`
}

// FrontDoors reads the environment files in dir and returns a front door
// for each that has a url, in pipeline order; an invalid file is an error
// naming it.
func FrontDoors(dir string) ([]FrontDoor, error) {
	var out []FrontDoor
	for _, name := range environment.Pipeline(environment.List(dir)) {
		e, err := environment.Load(dir, name)
		if err != nil {
			return nil, err
		}
		if e.URL == "" {
			continue
		}
		// Twice the instances and their canaries: a release's new set
		// comes up beside the old one, and HAProxy keeps a slot of a
		// stopped instance until Consul's answer drops it.
		out = append(out, FrontDoor{Env: e.Name, URL: e.URL, Addr: e.ListenAddr(), Service: e.Job,
			Slots: max(10, 2*(e.Count+*e.Update.Canary))})
	}
	return out, nil
}

// HAProxyConfig renders HAProxy's configuration: a frontend per
// environment, each with a backend that follows the environment's Consul
// service, and the stats page with its Prometheus exporter; dnsAddrs are
// the Consul agents' DNS addresses it asks, sock its admin socket. The
// stack runs it, and cmd/bench measures what it adds to a request. Each setting
// below is one a test or the probe of issue 25 found a request lost
// without (docs/stack.md says which):
//
//   - server-template on the service's SRV records, re-resolved every
//     second (timeout resolve), follows Consul's passing instances without
//     a reload; allow-dup-ip, since every instance here shares 127.0.0.1.
//   - An answer naming no instance (NXDOMAIN: the service has none
//     passing) empties the backend within a second (hold nx 1s; HAProxy's
//     default kept a deregistered instance 30 s), while a Consul agent that
//     does not answer leaves the servers as they were for 30 s.
//   - HAProxy's own check, GET /readyz every second, two failures out:
//     Consul kept a killed instance passing for ~6 s, this takes it out in 2.
//   - retries 3 with retry-on conn-failure empty-response and option
//     redispatch 1: a request whose connection is refused (an instance
//     that just died), or that an instance dying under it closed without
//     an answer, is sent again, to another instance. The second may have
//     been counted by the dead instance: a user sees no error when a node
//     dies, at the price of a visit counted twice for each request cut.
//     With conn-failure alone, the cluster's node-loss test saw a request
//     cut by the kill answered 502 in one run, and in another Redis
//     counted one visit more than the answers; a probe with 10 requests
//     inside an instance SIGKILLed had 10 answered 502, and none with
//     empty-response (counted 30 for 20 answers).
func HAProxyConfig(doors []FrontDoor, dnsAddrs []string, statsAddr, sock string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Rendered by the local stack (internal/localstack/frontdoor.go) from the
# environment files' url: edit those, then make down and make up.
global
  log stdout format raw local0 notice
  stats socket %s mode 600 level admin

defaults
  mode http
  log global
  option dontlognull
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  timeout http-request 10s
  timeout queue 5s

resolvers consul
%s  accepted_payload_size 8192
  resolve_retries 3
  timeout resolve 1s
  timeout retry 1s
  hold valid 10s
  hold obsolete 0s
  hold nx 1s
  hold refused 30s
  hold timeout 30s
  hold other 30s

frontend stats
  bind %s
  http-request use-service prometheus-exporter if { path /metrics }
  stats enable
  stats uri /
  stats refresh 5s
`, sock, nameservers(dnsAddrs), statsAddr)
	for _, d := range doors {
		fmt.Fprintf(&b, `
frontend %[1]s
  bind %[2]s
  default_backend %[1]s

backend %[1]s
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  option redispatch 1
  retries 3
  retry-on conn-failure empty-response
  default-server check inter 1s fall 2 rise 2 init-addr none resolvers consul resolve-prefer ipv4 resolve-opts allow-dup-ip
  server-template app %[3]d _%[4]s._tcp.service.consul
`, d.Env, d.Addr, d.Slots, d.Service)
	}
	return b.String()
}

// startFrontDoor renders HAProxy's config, has HAProxy check it (an error
// quotes what it refused), and starts it in the foreground.
func (s *Stack) startFrontDoor() error {
	if s.cfg.Bin.HAProxy == "" || len(s.FrontDoors) == 0 {
		return nil
	}
	file := filepath.Join(s.Dir, "haproxy.cfg")
	conf := HAProxyConfig(s.FrontDoors, s.consulDNSAddrs(), s.FrontDoorStats, filepath.Join(s.Dir, "haproxy.sock"))
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command(s.cfg.Bin.HAProxy, "-c", "-q", "-f", file).CombinedOutput(); err != nil {
		return fmt.Errorf("HAProxy refuses %s: %v\n%s", file, err, out)
	}
	_, err := s.start("haproxy", s.cfg.Bin.HAProxy, "-db", "-f", file)
	return err
}

// consulDNSAddrs are the DNS addresses of the Consul agents HAProxy asks:
// the single agent's, or every agent of a cluster, so that one dead node
// does not leave the front door without answers (HAProxy asks them all and
// takes the first valid answer).
func (s *Stack) consulDNSAddrs() []string {
	port := strconv.Itoa(s.Ports.ConsulDNS)
	if len(s.Nodes) == 0 {
		return []string{net.JoinHostPort("127.0.0.1", port)}
	}
	var addrs []string
	for _, n := range s.Nodes {
		addrs = append(addrs, net.JoinHostPort(n.IP, port))
	}
	return addrs
}

// nameservers are the resolvers section's nameserver lines for addrs.
func nameservers(addrs []string) string {
	var b strings.Builder
	for i, a := range addrs {
		fmt.Fprintf(&b, "  nameserver consul%d %s\n", i+1, a)
	}
	return b.String()
}

// frontDoorReady lets Consul answer HAProxy's DNS questions (with ACLs,
// the agent's DNS token must exist), then checks that the stats page
// answers and each environment's frontend listens. A frontend with no
// instance behind it answers 503, which is no fault of the front door.
func (s *Stack) frontDoorReady(ctx context.Context) error {
	if err := s.grantDNS(ctx); err != nil {
		return err
	}
	return s.frontDoorUp(ctx)
}

// frontDoorUp checks that HAProxy's stats page answers and each frontend
// listens.
func (s *Stack) frontDoorUp(ctx context.Context) error {
	if err := s.httpOK(ctx, "http://"+s.FrontDoorStats+"/metrics"); err != nil {
		return err
	}
	for _, d := range s.FrontDoors {
		if !listening(d.Addr) {
			return fmt.Errorf("the front door of %s does not listen at %s", d.Env, d.Addr)
		}
	}
	return nil
}

// dnsPolicy lets Consul's DNS interface name every service and node: the
// DNS token's, which answers HAProxy's SRV questions.
const dnsPolicy = `service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
`

// grantDNS makes the Consul token the agent answers DNS questions with
// (its config names its secret, acl.tokens.dns), once: without it, with
// default deny, Consul answers every question with nothing.
func (s *Stack) grantDNS(ctx context.Context) error {
	if !s.ACL || s.dnsToken == "" {
		return nil
	}
	cc, err := s.consulClient()
	if err != nil {
		return err
	}
	const policy = "counter-dns"
	if err := access.PutConsulPolicy(ctx, cc, policy, dnsPolicy); err != nil {
		return err
	}
	// Any token may read itself: one Consul knows is already made.
	self, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.dnsToken, HttpClient: s.httpClient()})
	if err != nil {
		return err
	}
	if _, _, err := self.ACL().TokenReadSelf((&consul.QueryOptions{}).WithContext(ctx)); err == nil {
		return nil
	}
	_, _, err = cc.ACL().TokenCreate(&consul.ACLToken{
		SecretID: s.dnsToken, Description: "counter front door DNS",
		Policies: []*consul.ACLTokenPolicyLink{{Name: policy}},
	}, (&consul.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("make Consul's DNS token: %w", err)
	}
	return nil
}

// frontDoorAddrs lists the front doors as ENV=ADDR, for progress.
func (s *Stack) frontDoorAddrs() string {
	var out []string
	for _, d := range s.FrontDoors {
		out = append(out, d.Env+"="+d.Addr)
	}
	return strings.Join(out, ", ")
}
