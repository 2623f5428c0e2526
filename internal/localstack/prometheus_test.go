package localstack_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/prometheus/common/model"

	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// TestPrometheusTokenReadsServicesOnly: Prometheus's Consul token, which
// the stack makes and keeps in its secrets, lists services and their
// instances (what consul_sd_configs asks) and nothing else: Consul answers
// 403 to it for the releases' config snapshots in KV, for any write, for
// the ACLs and for the agent, and lists it no KV key.
func TestPrometheusTokenReadsServicesOnly(t *testing.T) {
	t.Parallel()
	s := stacktest.Start(t)
	token := s.PrometheusToken()
	if token == "" {
		t.Fatal("the stack with ACLs has no Prometheus token")
	}
	_, admin := stacktest.Clients(t, s)
	key := "counter/releases/default/" + stacktest.Name(t, "prom") + "/abc/HOST"
	if _, err := admin.KV().Put(&consul.KVPair{Key: key, Value: []byte("127.0.0.1")}, nil); err != nil {
		t.Fatal(err)
	}
	c, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if services, _, err := c.Catalog().Services(nil); err != nil || services["nomad-client"] == nil {
		t.Errorf("the token lists services %v (%v), want Nomad's among them", services, err)
	}
	if entries, _, err := c.Health().Service("nomad-client", "", false, nil); err != nil || len(entries) == 0 {
		t.Errorf("the token lists %d instances of nomad-client (%v), want them: Prometheus finds allocations so", len(entries), err)
	}
	denied := []struct {
		what string
		call func() error
	}{
		{"read a config snapshot in KV", func() error { _, _, err := c.KV().Get(key, nil); return err }},
		{"write KV", func() error {
			_, err := c.KV().Put(&consul.KVPair{Key: key, Value: []byte("evil")}, nil)
			return err
		}},
		{"register a service", func() error {
			return c.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "x", Name: "x", Port: 1})
		}},
		{"list the ACL tokens", func() error { _, _, err := c.ACL().TokenList(nil); return err }},
		{"write an ACL policy", func() error {
			_, _, err := c.ACL().PolicyCreate(&consul.ACLPolicy{Name: "evil", Rules: `key_prefix "" { policy = "write" }`}, nil)
			return err
		}},
		{"read the agent's config", func() error { _, err := c.Agent().Self(); return err }},
	}
	for _, d := range denied {
		err := d.call()
		var se consul.StatusError
		if !errors.As(err, &se) || se.Code != http.StatusForbidden {
			t.Errorf("Prometheus's token may %s: %v, want 403", d.what, err)
		}
	}
	// A listing is filtered, not refused: the token sees no key.
	if keys, _, err := c.KV().Keys("counter/", "", nil); err != nil || len(keys) != 0 {
		t.Errorf("Prometheus's token lists KV keys %v (%v), want none", keys, err)
	}
	if p, _, err := admin.KV().Get(key, nil); err != nil || p == nil || string(p.Value) != "127.0.0.1" {
		t.Errorf("the snapshot after the token's attempts: %+v (%v), want it as written", p, err)
	}
	stacktest.NoSecret(t, "Prometheus's config", readFile(t, s.Dir+"/prometheus.yml"))
}

// TestPrometheusLabelsEveryInstanceByAllocation: Prometheus finds through
// Consul every instance of a service tagged "counter" (as Nomad registers
// each allocation of an environment's job) within seconds, and labels its
// series with the allocation's ID (from the service ID Nomad gives it),
// the service, and whether it is a canary; an instance that leaves Consul
// leaves Prometheus's targets. The instances are metrics endpoints of the
// test's own, registered under the IDs Nomad would give them: the deployer's
// tests scrape real allocations. They go into Consul's catalog under a node
// of the test's own, not into an agent: a Nomad client removes from its
// agent every _nomad- service it did not register itself (it did so in CI,
// two seconds after the test registered them).
func TestPrometheusLabelsEveryInstanceByAllocation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		start func(testing.TB) *localstack.Stack
		// agent is the Consul agent the test writes the instances
		// through: "" for the stack's first.
		agent string
	}{
		{"one agent", stacktest.Start, ""},
		{"a cluster, instances on a client node", stacktest.StartCluster, "client-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.start(t)
			addr := s.ConsulAddr
			if tt.agent != "" {
				n, ok := s.Node(tt.agent)
				if !ok {
					t.Fatalf("no node %s in the cluster", tt.agent)
				}
				addr = n.ConsulAddr
			}
			admin, err := consul.NewClient(&consul.Config{Address: addr, Token: s.ConsulToken})
			if err != nil {
				t.Fatal(err)
			}
			scrapesByAllocation(t, s, admin)
			if tt.agent != "" {
				scrapesWithTheFirstAgentDown(t, s, admin)
			}
		})
	}
}

// scrapesByAllocation registers a tagged service's instances with the
// Consul agent admin reaches and checks what Prometheus makes of them.
func scrapesByAllocation(t *testing.T, s *localstack.Stack, admin *consul.Client) {
	t.Helper()
	service := stacktest.Name(t, "scraped")
	node := service + "-node"
	type instance struct {
		alloc  string
		canary bool
	}
	instances := []instance{
		{"0e4f2a6b-1c3d-4e5f-8a9b-0c1d2e3f4a5b", false},
		{"9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a", true},
	}
	for i, in := range instances {
		host, p := serveCount(t, 10*(i+1))
		tags := []string{"counter", "release-abc"}
		if in.canary {
			tags = append(tags, "canary")
		}
		register(t, admin, node, &consul.AgentService{
			ID: "_nomad-task-" + in.alloc + "-group-web-" + service + "-http", Service: service, Tags: tags, Address: host, Port: p,
		})
	}
	// Untagged: a service that is no environment's job is not scraped.
	register(t, admin, node, &consul.AgentService{ID: service + "-other", Service: service + "-other", Address: "127.0.0.1", Port: 1})

	start := time.Now()
	q := fmt.Sprintf(`up{%s=%q}`, localstack.LabelService, service)
	got := stacktest.WaitQuery(t, s, 30*time.Second, q, func(v model.Vector) bool { return len(v) == len(instances) && allUp(v) })
	t.Logf("Prometheus scraped both instances %s after they were registered", time.Since(start).Round(100*time.Millisecond))
	// A cluster's Prometheus hears of each instance from every agent: it
	// scrapes each once.
	targets, err := stacktest.Prometheus(t, s).Targets(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var scraped []string
	for _, tg := range targets.Active {
		if string(tg.Labels[localstack.LabelService]) == service {
			scraped = append(scraped, string(tg.Labels[localstack.LabelAlloc]))
		}
	}
	if len(scraped) != len(instances) {
		t.Errorf("Prometheus has %d targets for the %d instances: %v", len(scraped), len(instances), scraped)
	}
	for _, in := range instances {
		found := false
		for _, sample := range got {
			if string(sample.Metric[localstack.LabelAlloc]) == in.alloc {
				found = true
				if want := strconv.FormatBool(in.canary); string(sample.Metric[localstack.LabelCanary]) != want {
					t.Errorf("alloc %s: canary=%q, want %q (%s)", in.alloc, sample.Metric[localstack.LabelCanary], want, sample.Metric)
				}
			}
		}
		if !found {
			t.Errorf("no series of alloc %s in %s", in.alloc, got)
		}
	}
	counts := stacktest.Query(t, s, fmt.Sprintf(`counter_http_requests_total{%s=%q, %s="true"}`, localstack.LabelService, service, localstack.LabelCanary))
	if len(counts) != 1 || counts[0].Value != 20 || string(counts[0].Metric[localstack.LabelAlloc]) != instances[1].alloc {
		t.Errorf("the canary's request count: %s, want 20 labelled alloc %s", counts, instances[1].alloc)
	}
	if v := stacktest.Query(t, s, fmt.Sprintf(`up{%s=%q}`, localstack.LabelService, service+"-other")); len(v) != 0 {
		t.Errorf("an untagged service is scraped: %s", v)
	}

	// The canary leaves Consul (promoted or failed): it leaves the targets.
	if _, err := admin.Catalog().Deregister(&consul.CatalogDeregistration{Node: node, ServiceID: "_nomad-task-" + instances[1].alloc + "-group-web-" + service + "-http"}, nil); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitQuery(t, s, 30*time.Second, q, func(v model.Vector) bool {
		return len(v) == 1 && string(v[0].Metric[localstack.LabelAlloc]) == instances[0].alloc
	})
}

// scrapesWithTheFirstAgentDown kills the Consul agent of the cluster's
// first server (the one Prometheus asked alone, before it asked every
// agent) and registers an instance through admin, another node's agent:
// Prometheus still finds and scrapes it.
func scrapesWithTheFirstAgentDown(t *testing.T, s *localstack.Stack, admin *consul.Client) {
	t.Helper()
	first := s.Nodes[0].ConsulAgent()
	if err := s.Kill(first); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Cleanup(func() {
		if err := restartHealthy(context.Background(), s, first); err != nil {
			t.Error(err)
		}
	})

	service := stacktest.Name(t, "scraped-agent-down")
	const alloc = "3c2b1a09-8f7e-4d6c-9b5a-4e3d2c1b0a9f"
	host, port := serveCount(t, 5)
	node := service + "-node"
	svc := &consul.AgentService{ID: "_nomad-task-" + alloc + "-group-web-" + service + "-http", Service: service, Tags: []string{"counter"}, Address: host, Port: port}
	// The dead agent's server may have led Consul's Raft: the others elect
	// a leader within seconds, and until then a write has nowhere to go.
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if _, err = admin.Catalog().Register(&consul.CatalogRegistration{Node: node, Address: "127.0.0.1", Service: svc}, nil); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("register an instance 30 s after %s was killed: %v", first, err)
	}
	t.Cleanup(func() { _, _ = admin.Catalog().Deregister(&consul.CatalogDeregistration{Node: node}, nil) })
	registered := time.Now()
	stacktest.WaitQuery(t, s, 30*time.Second, fmt.Sprintf(`up{%s=%q, %s=%q}`, localstack.LabelService, service, localstack.LabelAlloc, alloc), func(v model.Vector) bool { return len(v) == 1 && allUp(v) })
	t.Logf("with %s dead (killed %s before), Prometheus scraped an instance %s after it was registered", first,
		registered.Sub(killed).Round(100*time.Millisecond), time.Since(registered).Round(100*time.Millisecond))
}

// serveCount serves a /metrics page that says n requests to GET / were
// answered 200, until the test ends, and returns its address.
func serveCount(t *testing.T, n int) (host string, port int) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "counter_http_requests_total{route=\"/\",code=\"200\"} %d\n", n)
	}))
	t.Cleanup(srv.Close)
	host, p, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	port, _ = strconv.Atoi(p)
	return host, port
}

// register puts svc into Consul's catalog on node (made with it, at
// 127.0.0.1), and removes the node when the test ends.
func register(t *testing.T, c *consul.Client, node string, svc *consul.AgentService) {
	t.Helper()
	if _, err := c.Catalog().Register(&consul.CatalogRegistration{Node: node, Address: "127.0.0.1", Service: svc}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.Catalog().Deregister(&consul.CatalogDeregistration{Node: node}, nil) })
}

// allUp reports whether every sample of up is 1.
func allUp(v model.Vector) bool {
	for _, s := range v {
		if s.Value != 1 {
			return false
		}
	}
	return true
}
