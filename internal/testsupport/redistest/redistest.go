// Package redistest runs a real redis-server on a free loopback port for a
// test, and can stop and restart it on the same port to show outages, or
// pause and resume it to show a server that stalls with its connections
// open.
package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kodekloud/counter/internal/redisprobe"
	"github.com/kodekloud/counter/internal/testsupport/envtest"
)

// Server is a redis-server process owned by one test.
type Server struct {
	Host string
	Port int

	tb     testing.TB
	bin    string
	dir    string
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	log    *bytes.Buffer
	paused bool
	// resumeAtCleanup is set once Pause has registered a cleanup that
	// resumes the server.
	resumeAtCleanup bool
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
		if err := ping(s.Addr()); err == nil {
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
// connections afterwards. A paused server is resumed first, so it dies as a
// running server does. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if s.paused {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		s.paused = false
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
	if s.tb.Failed() {
		s.tb.Logf("redis-server %s log:\n%s", s.Addr(), s.log)
	}
}

// Pause stops the server process with SIGSTOP: its port still accepts
// connections and its open connections stay open, but nothing is answered
// until Resume, as a Redis that stalls (swapping, a long fork, a frozen VM)
// looks to its clients. A server still paused when the test ends is resumed
// by a cleanup that runs before those registered earlier (a client under
// test shutting down sees a live Redis), and before it is stopped. Pausing a
// paused server does nothing; pausing a stopped one fails the test.
func (s *Server) Pause() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.tb.Fatalf("redistest: Pause: redis on %s is not running", s.Addr())
	}
	if s.paused {
		return
	}
	if !s.resumeAtCleanup {
		s.tb.Cleanup(s.Resume)
		s.resumeAtCleanup = true
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.tb.Fatalf("redistest: Pause: SIGSTOP redis-server on %s: %v", s.Addr(), err)
	}
	s.paused = true
}

// Resume continues a server stopped by Pause with SIGCONT; it answers what
// its clients sent while it was paused, in order. Resuming a server that is
// not paused does nothing.
func (s *Server) Resume() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || !s.paused {
		return
	}
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.tb.Fatalf("redistest: Resume: SIGCONT redis-server on %s: %v", s.Addr(), err)
	}
	s.paused = false
}

// Get returns the value of key as a string, "" when it does not exist.
func (s *Server) Get(key string) (string, error) {
	var v string
	err := do(s.Addr(), func(ctx context.Context, c *redis.Client) (err error) {
		v, err = c.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", key, err)
	}
	return v, nil
}

// Set sets key to value.
func (s *Server) Set(key, value string) error {
	err := do(s.Addr(), func(ctx context.Context, c *redis.Client) error {
		return c.Set(ctx, key, value, 0).Err()
	})
	if err != nil {
		return fmt.Errorf("SET %s: %w", key, err)
	}
	return nil
}

// Info returns the server's INFO section, as Redis writes it.
func (s *Server) Info(section string) (string, error) {
	var v string
	err := do(s.Addr(), func(ctx context.Context, c *redis.Client) (err error) {
		v, err = c.Info(ctx, section).Result()
		return err
	})
	if err != nil {
		return "", fmt.Errorf("INFO %s: %w", section, err)
	}
	return v, nil
}

// ping reports whether the server at addr answers PING.
func ping(addr string) error {
	return do(addr, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
}

// do runs f with a client of its own over one new connection to addr
// (redisprobe): each command is sent once and fails after two seconds
// without an answer, so a paused server does not hang the test.
func do(addr string, f func(context.Context, *redis.Client) error) error {
	return redisprobe.Do(context.Background(), addr, f)
}
