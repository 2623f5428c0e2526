package localstack

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kodekloud/counter/internal/testsupport/envtest"
)

// TestHAProxyTakesTheRenderedConfig has HAProxy itself check the config
// the stack renders, for one agent and for a cluster's five, and that
// each environment's backend carries the settings the front door's tests
// rely on. It starts nothing.
func TestHAProxyTakesTheRenderedConfig(t *testing.T) {
	haproxy := envtest.LookPath(t, "haproxy", "haproxy")
	doors := []FrontDoor{
		{Env: "dev", Addr: "127.0.0.1:18081", Service: "counter-dev", Slots: 10},
		{Env: "prod", Addr: "127.0.0.1:18083", Service: "counter-prod", Slots: 12},
	}
	tests := []struct {
		name string
		dns  []string
	}{
		{"one Consul agent", []string{"127.0.0.1:8600"}},
		{"every agent of a cluster", []string{"127.0.1.1:8600", "127.0.1.2:8600", "127.0.1.3:8600", "127.0.1.11:8600", "127.0.1.12:8600"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := HAProxyConfig(doors, tt.dns, "127.0.0.1:18404", filepath.Join(t.TempDir(), "haproxy.sock"))
			file := filepath.Join(t.TempDir(), "haproxy.cfg")
			if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(haproxy, "-c", "-q", "-f", file).CombinedOutput(); err != nil {
				t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, conf)
			}
			for _, want := range append([]string{
				"server-template app 10 _counter-dev._tcp.service.consul",
				"server-template app 12 _counter-prod._tcp.service.consul",
				"option httpchk GET /readyz", "inter 1s fall 2", "option redispatch 1", "retries 3", "retry-on conn-failure empty-response",
				"resolve-opts allow-dup-ip", "hold nx 1s", "prometheus-exporter",
			}, tt.dns...) {
				if !strings.Contains(conf, want) {
					t.Errorf("the config lacks %q:\n%s", want, conf)
				}
			}
		})
	}
}
