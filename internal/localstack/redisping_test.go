package localstack

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/testsupport/envtest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

func TestPingRedis(t *testing.T) {
	r := redistest.Start(t)
	ctx := context.Background()
	if err := pingRedis(ctx, r.Addr()); err != nil {
		t.Fatalf("a running Redis: %v", err)
	}

	free := net.JoinHostPort("127.0.0.1", strconv.Itoa(envtest.FreePort(t)))
	if err := pingRedis(ctx, free); err == nil || !strings.Contains(err.Error(), free) {
		t.Errorf("nothing listening: got %v, want an error naming %s", err, free)
	}

	r.Pause()
	start := time.Now()
	err := pingRedis(ctx, r.Addr())
	if err == nil || !strings.Contains(err.Error(), r.Addr()) {
		t.Errorf("a paused Redis: got %v, want an error naming %s", err, r.Addr())
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a paused Redis: PING gave up after %s, want about 2 s", took)
	}
	r.Resume()
	if err := pingRedis(ctx, r.Addr()); err != nil {
		t.Fatalf("a resumed Redis: %v", err)
	}
}
