package localstack_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestFrontDoorFollowsConsul is the stack's front door on its own: an
// environment file with a url gets HAProxy listening there, which sends
// requests to the instances Consul lists for the environment's service
// (found by DNS SRV through the agent, with ACLs on), drops one Consul no
// longer lists, and listens at the same address after Down and Start.
func TestFrontDoorFollowsConsul(t *testing.T) {
	t.Parallel()
	cfg := ownConfig(t)
	cfg.Detach = true
	envDir := t.TempDir()
	service := stacktest.Name(t, "door")
	addr := freeAddr(t)
	url := "http://" + addr + "/"
	src := fmt.Sprintf("job = %q\nurl = %q\ndatacenters = [\"dc1\"]\nconfig {\n  HOST = \"127.0.0.1\"\n  PORT = 6379\n}\n", service, url)
	if err := os.WriteFile(filepath.Join(envDir, "web.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Environments = envDir
	ctx := context.Background()
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = localstack.Down(context.Background(), cfg.Dir, io.Discard) })
	if len(s.FrontDoors) != 1 || s.FrontDoors[0].Addr != addr || s.FrontDoors[0].Service != service {
		t.Fatalf("FrontDoors = %+v, want one for %s at %s", s.FrontDoors, service, addr)
	}

	// An instance: the app's /readyz and /, registered in Consul as Nomad
	// registers the app's.
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "instance at %s", r.URL.Path)
	}))
	defer app.Close()
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(app.URL, "http://"))
	p, _ := strconv.Atoi(port)
	cc, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.ConsulToken})
	if err != nil {
		t.Fatal(err)
	}
	reg := &consul.AgentServiceRegistration{ID: service + "-1", Name: service, Address: host, Port: p}
	if err := cc.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitAnswer(t, url, http.StatusOK, "instance at /")
	t.Logf("the front door answered through the instance %s after it was registered", time.Since(start).Round(100*time.Millisecond))

	// A second instance, which dies while Consul still lists it passing
	// (it has no Consul check, as a dead node's instances keep theirs):
	// the front door's own check takes it out within 3 s.
	dying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	_, dport, _ := net.SplitHostPort(strings.TrimPrefix(dying.URL, "http://"))
	dp, _ := strconv.Atoi(dport)
	reg2 := &consul.AgentServiceRegistration{ID: service + "-2", Name: service, Address: host, Port: dp}
	if err := cc.Agent().ServiceRegister(reg2); err != nil {
		t.Fatal(err)
	}
	server := net.JoinHostPort(host, dport)
	waitFor(t, 10*time.Second, "the second instance up in the front door", func() bool { return serverStatus(t, s, server) == "UP" })
	dying.Close()
	start = time.Now()
	waitFor(t, 3*time.Second, "the dead instance out of the front door", func() bool { return serverStatus(t, s, server) == "DOWN" })
	t.Logf("the front door took the dead instance out %s after it died, while Consul listed it passing", time.Since(start).Round(100*time.Millisecond))
	if err := cc.Agent().ServiceDeregister(reg2.ID); err != nil {
		t.Fatal(err)
	}

	if err := cc.Agent().ServiceDeregister(reg.ID); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitAnswer(t, url, http.StatusServiceUnavailable, "")
	t.Logf("the front door dropped the instance %s after Consul did", time.Since(start).Round(100*time.Millisecond))

	res, err := http.Get("http://" + s.FrontDoorStats + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), `haproxy_backend_http_requests_total{proxy="web"}`) {
		t.Errorf("the front door's /metrics lacks its backend's request count:\n%.2000s", body)
	}
	stacktest.NoSecret(t, "the front door's config", readFile(t, filepath.Join(cfg.Dir, "haproxy.cfg")))

	// make down and make up: the same address, following Consul again.
	if err := localstack.Down(ctx, cfg.Dir, io.Discard); err != nil {
		t.Fatal(err)
	}
	if res, err := http.Get(url); err == nil {
		res.Body.Close()
		t.Errorf("the front door still answers after Down: %s", res.Status)
	}
	again := cfg
	again.Ports, again.Resume = s.Ports, true
	if s, err = localstack.Start(ctx, again); err != nil {
		t.Fatal(err)
	}
	if s.FrontDoors[0].Addr != addr {
		t.Errorf("after Down and Start the front door is at %s, want %s as before", s.FrontDoors[0].Addr, addr)
	}
	cc, _ = consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.ConsulToken})
	if err := cc.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, url, http.StatusOK, "instance at /")
}

// serverStatus is the state the front door's runtime API gives its server
// at addr ("UP", "DOWN", or HAProxy's number for another), "" when it has
// none there.
func serverStatus(t *testing.T, s *localstack.Stack, addr string) string {
	t.Helper()
	c, err := net.Dial("unix", filepath.Join(s.Dir, "haproxy.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "show servers state\n"); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	var col map[string]int
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && f[0] == "#" {
			col = map[string]int{}
			for i, name := range f[1:] {
				col[name] = i
			}
			continue
		}
		if col == nil || len(f) <= col["srv_port"] || net.JoinHostPort(f[col["srv_addr"]], f[col["srv_port"]]) != addr {
			continue
		}
		// srv_op_state: 0 stopped, 2 running.
		switch st := f[col["srv_op_state"]]; st {
		case "0":
			return "DOWN"
		case "2":
			return "UP"
		default:
			return st
		}
	}
	return ""
}

// waitFor polls cond every 100 ms until it holds, failing the test after
// within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, within)
		}
	}
}

// waitAnswer waits up to 30 s until GET url answers status with a body
// holding want.
func waitAnswer(t *testing.T, url string, status int, want string) {
	t.Helper()
	last := ""
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		res, err := http.Get(url)
		if err != nil {
			last = err.Error()
			continue
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode == status && strings.Contains(string(body), want) {
			return
		}
		last = fmt.Sprintf("%s: %.200s", res.Status, body)
	}
	t.Fatalf("GET %s: want %d with %q within 30 s; last: %s", url, status, want, last)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
