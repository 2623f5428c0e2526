// Package redistest runs a real redis-server on a free loopback port for a
// test, and can stop and restart it on the same port to show outages.
package redistest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/resp"
	"github.com/kodekloud/counter/internal/testsupport/envtest"
)

// Server is a redis-server process owned by one test.
type Server struct {
	Host string
	Port int

	tb   testing.TB
	bin  string
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

// Start runs redis-server on a free port of 127.0.0.1 and stops it when the
// test ends. In CI a missing redis-server fails the test; under go test
// -short the test skips.
func Start(tb testing.TB) *Server {
	tb.Helper()
	envtest.NeedsServers(tb, "redis-server")
	s := &Server{
		Host: "127.0.0.1",
		tb:   tb,
		bin:  envtest.LookPath(tb, "redis-server", "redis-server"),
		dir:  tb.TempDir(),
	}
	tb.Cleanup(s.Stop)
	// A port picked free can be taken (by another test's server or an
	// outgoing connection) before redis-server binds it; then it exits at
	// once, and another port is tried.
	for attempt := 1; ; attempt++ {
		s.Port = envtest.FreePort(tb)
		err := s.start()
		if err == nil {
			return s
		}
		if !errors.Is(err, errExitedAtStart) || attempt == 3 {
			tb.Fatal(err)
		}
		tb.Logf("%v; trying another port", err)
	}
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Restart starts the server again on the same port after Stop, and waits
// until it answers PING. The data set starts empty.
func (s *Server) Restart() {
	s.tb.Helper()
	if err := s.start(); err != nil {
		s.tb.Fatal(err)
	}
}

var errExitedAtStart = errors.New("exited at start")

// start runs redis-server on s.Port and waits until it answers PING.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("redis on %s is already running", s.Addr())
	}
	s.log = new(bytes.Buffer)
	cmd := exec.Command(s.bin,
		"--bind", s.Host, "--port", strconv.Itoa(s.Port),
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--daemonize", "no", "--protected-mode", "no")
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(s.done)

	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := resp.Ping(s.Addr()); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not ready after 10s: %v\n%s", s.Addr(), err, s.log)
		}
		select {
		case <-s.done:
			s.cmd = nil
			return fmt.Errorf("redis-server on %s %w:\n%s", s.Addr(), errExitedAtStart, s.log)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop kills the server and waits for it to exit; the port refuses
// connections afterwards. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
	if s.tb.Failed() {
		s.tb.Logf("redis-server %s log:\n%s", s.Addr(), s.log)
	}
}

// Get returns the value of key as a string, "" when it does not exist.
func (s *Server) Get(key string) (string, error) {
	return resp.Do(s.Addr(), "GET", key)
}

// Set sets key to value.
func (s *Server) Set(key, value string) error {
	_, err := resp.Do(s.Addr(), "SET", key, value)
	return err
}
