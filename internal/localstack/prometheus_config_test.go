package localstack

import (
	"regexp"
	"strings"
	"testing"
)

// TestAllocLabelFromServiceID checks the relabel rule that gives each
// series its allocation against the service IDs Nomad registers, and
// against those of Consul services that are no allocation's. It starts
// nothing; the stack's tests see the rule in Prometheus.
func TestAllocLabelFromServiceID(t *testing.T) {
	// Prometheus anchors a relabel regex at both ends.
	re := regexp.MustCompile("^(?:" + allocFromServiceID + ")$")
	tests := []struct {
		name, id, want string
	}{
		{"takes/the allocation of a group service", "_nomad-task-6f2ae1c4-58d1-2b3e-0f36-9ad5a1f0c2d7-group-web-counter-dev-http", "6f2ae1c4-58d1-2b3e-0f36-9ad5a1f0c2d7"},
		{"takes/the allocation of a task service", "_nomad-task-0b8e1b2a-0000-4c8b-9d1e-7a6f5e4d3c2b-app-counter-prod-20123", "0b8e1b2a-0000-4c8b-9d1e-7a6f5e4d3c2b"},
		{"ignores/a Nomad server's own service", "_nomad-server-4hs5ut2rtyb2dcuumoxtpzwuvvfzmssd", ""},
		{"ignores/a service registered by hand", "counter-dev-1", ""},
		{"ignores/a short allocation ID", "_nomad-task-6f2ae1c4-group-web-http", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if m := re.FindStringSubmatch(tt.id); m != nil {
				got = m[1]
			}
			if got != tt.want {
				t.Errorf("alloc of %q = %q, want %q", tt.id, got, tt.want)
			}
		})
	}
	conf := promConfig([]string{"127.0.0.1:8500"}, "/stack/secrets/consul-prometheus-token", "127.0.0.1:8404")
	for _, want := range []string{"regex: '" + allocFromServiceID + "'", "tags: [counter]", "credentials_file: /stack/secrets/consul-prometheus-token",
		"target_label: alloc", "target_label: service", "target_label: canary", "regex: .*,canary,.*", "targets: [127.0.0.1:8404]", "datacenter: dc1"} {
		if !strings.Contains(conf, want) {
			t.Errorf("the config lacks %q:\n%s", want, conf)
		}
	}
	// A cluster's Prometheus asks every agent, each with the token.
	agents := []string{"127.0.0.11:8500", "127.0.0.12:8500", "127.0.0.13:8500"}
	cluster := promConfig(agents, "/stack/secrets/consul-prometheus-token", "")
	for _, a := range agents {
		if !strings.Contains(cluster, "- server: "+a+"\n") {
			t.Errorf("the cluster's config does not ask %s:\n%s", a, cluster)
		}
	}
	if n := strings.Count(cluster, "credentials_file:"); n != len(agents) {
		t.Errorf("the cluster's config gives the token to %d agents, want %d:\n%s", n, len(agents), cluster)
	}
	if open := promConfig([]string{"127.0.0.1:8500"}, "", ""); strings.Contains(open, "authorization") || strings.Contains(open, "frontdoor") {
		t.Errorf("without ACLs and a front door the config has a token or the front door:\n%s", open)
	}
}
