package redistest

import (
	"net"
	"testing"
	"time"
)

func TestPausedServerStallsUntilResumed(t *testing.T) {
	s := Start(t)
	if err := s.Set("k", "1"); err != nil {
		t.Fatal(err)
	}
	s.Pause()
	// The port still takes connections; nothing answers on them.
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		t.Fatalf("dial a paused server: %v", err)
	}
	defer c.Close()
	start := time.Now()
	if v, err := s.Get("k"); err == nil {
		t.Fatalf("GET on a paused server answered %q", v)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("GET on a paused server failed after %s, before its read timeout", took)
	}
	s.Resume()
	if v, err := s.Get("k"); err != nil || v != "1" {
		t.Fatalf("GET after Resume = %q, %v; want 1", v, err)
	}
}

func TestServerLeftPausedIsStoppedAtCleanup(t *testing.T) {
	var addr string
	t.Run("leaves its server paused", func(t *testing.T) {
		s := Start(t)
		addr = s.Addr()
		s.Pause()
		s.Pause() // twice does nothing
	})
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still takes connections after the test that paused it ended", addr)
	}
}

func TestStoppedServerRestartsEmpty(t *testing.T) {
	s := Start(t)
	if err := s.Set("k", "1"); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if _, err := s.Get("k"); err == nil {
		t.Fatal("GET on a stopped server answered")
	}
	s.Restart()
	if v, err := s.Get("k"); err != nil || v != "" {
		t.Fatalf("GET after Restart = %q, %v; want the empty data set", v, err)
	}
}
