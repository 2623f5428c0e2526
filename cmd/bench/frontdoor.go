package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/localstack"
)

// frontDoorService is the Consul service the bench registers the app under
// and the front door follows.
const frontDoorService = "counter-bench"

// frontDoor is HAProxy in front of the app under test, with the config the
// local stack renders (localstack.HAProxyConfig), fed by a Consul agent of
// its own. The whole config is the stack's, resolvers included, rather than
// a static server line: the settings a request meets (http mode, timeouts,
// retries, redispatch, the /readyz check, the server-template slots) stay
// the stack's whatever changes in the renderer, and the cost of a Consul
// agent idling beside the loads (one SRV question a second) is what the
// stack pays too.
type frontDoor struct {
	addr   string // where HAProxy listens: the URL users call
	what   string // HAProxy's version and where its config came from
	consul *proc
	proxy  *proc
}

// startFrontDoor starts a Consul agent, registers the app at appAddr as
// frontDoorService, renders the stack's HAProxy config for it, has HAProxy
// check it and starts HAProxy, then waits until a request through it
// reaches the app. stop stops what it started, also on error.
func startFrontDoor(ctx context.Context, root, work, appAddr string, progress io.Writer) (fd *frontDoor, err error) {
	bins, err := localstack.FindBinaries(ctx, root, progress)
	if err != nil {
		return nil, err
	}
	fd = &frontDoor{addr: fmt.Sprintf("127.0.0.1:%d", freePort())}
	defer func() {
		if err != nil {
			fd.stop()
		}
	}()
	httpPort, dnsPort := freePort(), freePort()
	// The single agent as internal/localstack runs it (startConsul): a
	// server of one, answering DNS for passing instances only, on ports
	// of its own; no ACLs, no UI.
	cfg := map[string]any{
		"node_name":   "counter-bench",
		"bind_addr":   "127.0.0.1",
		"client_addr": "127.0.0.1",
		"ports": map[string]int{
			"http": httpPort, "dns": dnsPort, "server": freePort(),
			"serf_lan": freePort(), "serf_wan": freePort(), "grpc": -1, "grpc_tls": -1,
		},
		"dns_config":                  map[string]any{"only_passing": true},
		"log_level":                   "WARN",
		"disable_update_check":        true,
		"disable_anonymous_signature": true,
		"server":                      true,
		"bootstrap_expect":            1,
		"data_dir":                    filepath.Join(work, "consul"),
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	consulFile := filepath.Join(work, "consul.json")
	if err := os.WriteFile(consulFile, b, 0o600); err != nil {
		return fd, err
	}
	if fd.consul, err = startProc(ctx, filepath.Join(work, "consul.log"), nil, bins.Consul, "agent", "-config-file", consulFile); err != nil {
		return fd, err
	}
	cc, err := consul.NewClient(&consul.Config{Address: fmt.Sprintf("127.0.0.1:%d", httpPort)})
	if err != nil {
		return fd, err
	}
	if err := waitFor(60*time.Second, func() error {
		leader, err := cc.Status().Leader()
		if err == nil && leader == "" {
			err = fmt.Errorf("no leader elected yet")
		}
		return err
	}); err != nil {
		return fd, fmt.Errorf("consul: %w", err)
	}
	host, port, err := net.SplitHostPort(appAddr)
	if err != nil {
		return fd, err
	}
	p, _ := strconv.Atoi(port)
	if err := cc.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: frontDoorService, Name: frontDoorService, Address: host, Port: p}); err != nil {
		return fd, fmt.Errorf("consul: register %s at %s: %w", frontDoorService, appAddr, err)
	}

	doors := []localstack.FrontDoor{{Env: "bench", Addr: fd.addr, Service: frontDoorService, Slots: 10}}
	stats := fmt.Sprintf("127.0.0.1:%d", freePort())
	conf := localstack.HAProxyConfig(doors, []string{fmt.Sprintf("127.0.0.1:%d", dnsPort)}, stats, filepath.Join(work, "haproxy.sock"))
	file := filepath.Join(work, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return fd, err
	}
	if out, err := exec.CommandContext(ctx, bins.HAProxy, "-c", "-q", "-f", file).CombinedOutput(); err != nil {
		return fd, fmt.Errorf("HAProxy refuses %s: %v\n%s", file, err, out)
	}
	version, err := exec.CommandContext(ctx, bins.HAProxy, "-v").Output()
	if err != nil {
		return fd, fmt.Errorf("haproxy -v: %w", err)
	}
	fd.what = strings.TrimSpace(strings.SplitN(string(version), "\n", 2)[0]) +
		", config rendered by localstack.HAProxyConfig, servers from Consul DNS SRV"
	if fd.proxy, err = startProc(ctx, filepath.Join(work, "haproxy.log"), nil, bins.HAProxy, "-db", "-f", file); err != nil {
		return fd, err
	}
	// 503 until HAProxy has resolved the SRV record and its check has
	// passed twice.
	if err := waitFor(30*time.Second, func() error { return httpOK("http://" + fd.addr + "/healthz") }); err != nil {
		return fd, fmt.Errorf("front door %s: %w", fd.addr, err)
	}
	fmt.Fprintf(progress, "app: front door: HAProxy (%s) at %s, fed by Consul at 127.0.0.1:%d\n", file, fd.addr, httpPort)
	return fd, nil
}

// stop stops HAProxy, then Consul.
func (fd *frontDoor) stop() {
	if fd.proxy != nil {
		fd.proxy.stop()
	}
	if fd.consul != nil {
		fd.consul.stop()
	}
}
