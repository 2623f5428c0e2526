// Command app is the counter web service: GET / increments the Redis key
// visitorCount and answers with the value this request's increment returned.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	// go-redis logs through a logger of its package's own: its lines join
	// the app's JSON log on stderr.
	redis.SetLogger(redisLogger{slog.New(slog.NewJSONHandler(os.Stderr, nil))})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "app: %v\n", err)
		linger(ctx, failedExitDelay(err, os.Getenv))
	}
	stop()
	if err != nil {
		os.Exit(1)
	}
}

// failedExitDelay is how long the app waits, after it has said why it
// failed, before it exits. Under Nomad a failed start waits: Nomad's docker
// driver starts the process that copies a container's output to the task's
// log only after the container has started, and stops it as soon as the
// container exits, so the complaint of an app that fails at once can be
// lost (once in CI, every attempt's), and with it the deployer's account of
// why a release failed (hashicorp/nomad#6931). Run by hand, or
// failing after it served, it exits at once.
func failedExitDelay(err error, getenv func(string) string) time.Duration {
	if getenv("NOMAD_ALLOC_ID") == "" || !errors.As(err, new(startError)) {
		return 0
	}
	return 3 * time.Second
}

// linger waits for d, or until SIGTERM: Nomad stopping the task must not
// wait for it, nor see the runtime's exit status 2 for a signal it did not
// expect.
func linger(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// redisLogger is go-redis's logger (failed dials, pool trouble) as JSON.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...), "from", "go-redis")
}
