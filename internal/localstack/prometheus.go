package localstack

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/access"
)

// Prometheus's settings: what the canary analysis needs, and no more.
const (
	// ScrapeInterval is how often Prometheus reads each allocation's
	// /metrics. A canary's counts are the difference of two scrapes, so a
	// window of tens of seconds loses up to one interval of requests at
	// each end; at 1 s the loss is small against the minimum sample and a
	// canary's first requests show within a second or two. A handful of
	// allocations of ~100 series each costs Prometheus nothing at 1 s.
	ScrapeInterval = "1s"
	// promRetention keeps hours, not Prometheus's 15 days: the analysis
	// looks at the last minutes, and the stack's disk is a laptop's.
	promRetention = "6h"
	// promDatacenter is the Consul datacenter the stack's agents run in
	// (Consul's default). Named in the config, so that Prometheus need not
	// ask the agent (agent:read) which one it is.
	promDatacenter = "dc1"
)

// Labels every series of an allocation carries, which the deployer's
// canary analysis selects by: keep them as they are.
const (
	LabelAlloc   = "alloc"   // the Nomad allocation's ID
	LabelService = "service" // the Consul service: the environment's job
	LabelCanary  = "canary"  // "true" for a canary not yet promoted, else "false"
)

// allocFromServiceID is the relabel rule's regular expression that takes
// the allocation's ID out of the Consul service ID Nomad gives each
// allocation's service, _nomad-task-ALLOC-GROUP-SERVICE-PORT
// (client/serviceregistration/id.go). Prometheus anchors it at both ends.
const allocFromServiceID = `_nomad-task-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-.+`

// prometheusPolicy lets Prometheus list the services and their instances
// (consul_sd_configs asks /v1/catalog/services and /v1/health/service/NAME;
// Consul drops instances on nodes the token cannot read): read on services
// and nodes, nothing on KV (the releases' config snapshots), ACLs, the
// agent or anything else, and no write at all.
const prometheusPolicy = `service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
`

// prometheusTokenFile holds the secret of Prometheus's Consul token; its
// config names the file (credentials_file), never the secret.
const prometheusTokenFile = "consul-prometheus-token"

// promConfig renders Prometheus's configuration: every instance of a
// service tagged "counter" (each environment's job; jobs/counter.nomad.hcl)
// found through each Consul agent at consulAddrs, and the front door's
// exporter at statsAddr ("" for none). tokenFile is "" without ACLs.
//
// A cluster's Prometheus asks every agent, as its front door does: asking
// one, it found no new allocation while that agent's node was down, so a
// canary placed then had no series and its analysis would end inconclusive.
// Each agent answers with the same instances, and Prometheus scrapes a
// target once however many of its discoveries name it (scrape pools
// deduplicate targets by their labels after relabelling). What a dead
// agent knew stays until it is back: an allocation promoted meanwhile is
// two targets, one with its old canary tag, and is scraped twice, which
// the deployer's reading counts once (promquery's oneEach).
func promConfig(consulAddrs []string, tokenFile, statsAddr string) string {
	auth := ""
	if tokenFile != "" {
		// Consul takes a token as a bearer credential; Prometheus reads the
		// file on each request, so a restored backup's token applies.
		auth = fmt.Sprintf("        authorization:\n          credentials_file: %s\n", tokenFile)
	}
	var sd strings.Builder
	for _, addr := range consulAddrs {
		// Blocking queries return at once on a change; refresh_interval is
		// the pause after each, Prometheus's default being 30 s.
		fmt.Fprintf(&sd, "      - server: %s\n        datacenter: %s\n        tags: [counter]\n        refresh_interval: 1s\n%s", addr, promDatacenter, auth)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# Rendered by the local stack (internal/localstack/prometheus.go).
global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[1]s

scrape_configs:
  # Every allocation of every environment's job. Nomad names an
  # allocation's Consul service _nomad-task-ALLOC-GROUP-SERVICE-PORT, and
  # tags a canary "canary" until it is promoted.
  - job_name: counter
    consul_sd_configs:
%[2]s    relabel_configs:
      - source_labels: [__meta_consul_service_id]
        regex: '%[6]s'
        target_label: %[3]s
      - source_labels: [__meta_consul_service]
        target_label: %[4]s
      - target_label: %[5]s
        replacement: "false"
      - source_labels: [__meta_consul_tags]
        regex: .*,canary,.*
        target_label: %[5]s
        replacement: "true"
`, ScrapeInterval, sd.String(), LabelAlloc, LabelService, LabelCanary, allocFromServiceID)
	if statsAddr != "" {
		fmt.Fprintf(&b, `
  # The front door's HAProxy exporter: what users saw, per environment.
  - job_name: frontdoor
    static_configs:
      - targets: [%s]
`, statsAddr)
	}
	return b.String()
}

// startPrometheus makes its Consul token (Consul must run), renders its
// config and starts it. It runs after every other component is ready: a
// Prometheus that asked Consul before its token existed would wait 15 s
// before it asked again.
func (s *Stack) startPrometheus(ctx context.Context) error {
	if err := s.grantPrometheus(ctx); err != nil {
		return err
	}
	tokenFile := ""
	if s.ACL {
		tokenFile = filepath.Join(s.Dir, secretsDir, prometheusTokenFile)
	}
	data := filepath.Join(s.Dir, "prometheus")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	file := filepath.Join(s.Dir, "prometheus.yml")
	if err := os.WriteFile(file, []byte(promConfig(s.consulHTTPAddrs(), tokenFile, s.FrontDoorStats)), 0o644); err != nil {
		return err
	}
	_, err := s.start("prometheus", s.cfg.Bin.Prometheus,
		"--config.file="+file,
		"--storage.tsdb.path="+data,
		"--storage.tsdb.retention.time="+promRetention,
		"--web.listen-address="+strings.TrimPrefix(s.PrometheusAddr, "http://"),
		"--log.level=warn")
	return err
}

// consulHTTPAddrs are the HTTP addresses of the stack's Consul agents:
// the single agent's, or every agent of a cluster.
func (s *Stack) consulHTTPAddrs() []string {
	if len(s.Nodes) == 0 {
		return []string{s.ConsulAddr}
	}
	var addrs []string
	for _, n := range s.Nodes {
		addrs = append(addrs, n.ConsulAddr)
	}
	return addrs
}

// prometheusReady checks Prometheus's readiness endpoint.
func (s *Stack) prometheusReady(ctx context.Context) error {
	return s.httpOK(ctx, s.PrometheusAddr+"/-/ready")
}

// makePrometheusToken reads the secret of Prometheus's Consul token,
// making it the first time (a stack made before Prometheus has none yet);
// grantPrometheus makes the token once Consul runs.
func (s *Stack) makePrometheusToken() (err error) {
	s.promToken, err = s.secretFile(prometheusTokenFile)
	return err
}

// PrometheusToken returns the secret of Prometheus's Consul token; "" on
// a stack without ACLs or without Prometheus.
func (s *Stack) PrometheusToken() string { return s.promToken }

// grantPrometheus makes Prometheus's Consul token with prometheusPolicy
// (written again each time, so that the policy in this file applies), once:
// a token Consul already knows (it may read itself) is kept.
func (s *Stack) grantPrometheus(ctx context.Context) error {
	if !s.ACL || s.promToken == "" {
		return nil
	}
	cc, err := s.consulClient()
	if err != nil {
		return err
	}
	const policy = "counter-prometheus"
	if err := access.PutConsulPolicy(ctx, cc, policy, prometheusPolicy); err != nil {
		return err
	}
	self, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.promToken, HttpClient: s.httpClient()})
	if err != nil {
		return err
	}
	_, _, err = self.ACL().TokenReadSelf((&consul.QueryOptions{}).WithContext(ctx))
	if err == nil {
		return nil
	}
	// Only a token Consul does not know is made (403): after another error
	// it may well exist, and making it again would fail.
	var se consul.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		return fmt.Errorf("check Prometheus's Consul token: %w", err)
	}
	_, _, err = cc.ACL().TokenCreate(&consul.ACLToken{
		SecretID: s.promToken, Description: "counter Prometheus (consul_sd_configs)",
		Policies: []*consul.ACLTokenPolicyLink{{Name: policy}},
	}, (&consul.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("make Prometheus's Consul token: %w", err)
	}
	return nil
}
