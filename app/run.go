package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
)

// The server's limits against clients that are slow, silent or hostile
// (docs/app.md lists them with the tests that hold them).
const (
	// readTimeout bounds reading one request, head and body, from its first
	// byte: fasthttp sets one deadline per request, so a client that trickles
	// a byte at a time is closed when it runs out, however slowly it sends.
	readTimeout = 5 * time.Second
	// idleTimeout bounds the wait for a connection's first byte and for the
	// next request on a kept-alive one: a silent connection is closed.
	idleTimeout = 5 * time.Second
	// writeTimeout bounds writing one answer: a client that never reads
	// holds its connection this long at most, with no more than the write
	// buffer's worth of answers waiting for it.
	writeTimeout = 10 * time.Second
	// bufferSize is each connection's read and write buffer. A request head
	// larger than it is refused with 431; no route needs more.
	bufferSize = 4 << 10
	// maxConns is the most connections served at once; one more is answered
	// 503 and closed. The costliest kind, a client that pipelines and never
	// reads, was measured at 28 KiB (buffers, goroutine, fasthttp's request
	// state): 1,536 of them take 42 MiB, which fits in the job's 64 MiB
	// beside the app's own 15 MiB.
	maxConns = 1536
)

// gcPercent is the app's GOGC unless the environment sets one.
const gcPercent = 25

// run starts the service and blocks until ctx is cancelled (SIGTERM or
// SIGINT), then drains in-flight requests and returns nil.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 1 {
		return startError{fmt.Errorf("unexpected arguments %q: the app is configured by HOST, PORT and LISTEN_ADDR", args[1:])}
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return startError{err}
	}
	if getenv("GOGC") == "" {
		// The live heap is a few MiB of per-connection buffers: collecting
		// at 25% growth instead of 100% keeps RSS small under many
		// connections (docs/performance.md).
		debug.SetGCPercent(gcPercent)
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))

	rdb := redis.NewClient(&redis.Options{
		Addr:         cfg.redisAddr,
		DialTimeout:  cfg.redisTimeout,
		ReadTimeout:  cfg.redisTimeout,
		WriteTimeout: cfg.redisTimeout,
		PoolTimeout:  cfg.redisTimeout,
		// Never send a command twice: an INCRBY whose reply was lost may
		// have been applied, and a retry would count its visits again.
		MaxRetries: -1,
		// The batcher keeps one INCRBY in flight and /readyz sends a PING:
		// a few connections are all the app ever needs.
		PoolSize: 4,
		// One dial a round trip: a Redis that refuses connections gets its
		// visits answered 503 at once, not after five tries spread over a
		// second; the next batch dials again.
		DialerRetries: 1,
		// Skip CLIENT SETINFO on every new connection: one round trip less
		// when the pool refills after Redis comes back.
		DisableIdentity: true,
	})
	defer rdb.Close()
	counter := newBatcher(rdb, counterKey)
	defer counter.Close()

	ln, err := net.Listen("tcp", cfg.listenAddr)
	if err != nil {
		return startError{fmt.Errorf("listen on LISTEN_ADDR=%q: %w", cfg.listenAddr, err)}
	}

	reg := prometheus.NewRegistry()
	h := newHandler(counter, rdb, cfg.redisTimeout, newMetrics(reg), reg, log)
	srv := newServer(h.serve, log)
	log.Info("listening", "addr", ln.Addr().String(), "redis", cfg.redisAddr)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(patientListener{ln, log}) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.shutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.ShutdownWithContext(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	// Serve returns nil once shutdown has begun.
	if err := <-serveErr; err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

// newServer is the app's HTTP server with its limits.
func newServer(h fasthttp.RequestHandler, log *slog.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:         h,
		ReadTimeout:     readTimeout,
		IdleTimeout:     idleTimeout,
		WriteTimeout:    writeTimeout,
		ReadBufferSize:  bufferSize,
		WriteBufferSize: bufferSize,
		Concurrency:     maxConns,
		// No route takes a body.
		MaxRequestBodySize: bufferSize,
		// Idle kept-alive connections give their buffers back to the pool.
		ReduceMemoryUsage: true,
		CloseOnShutdown:   true,
		// A worker goroutine per connection stays for this long after its
		// connection goes idle: after a burst the count soon comes back down.
		MaxIdleWorkerDuration: time.Second,
		NoDefaultServerHeader: true,
		Logger:                fasthttpLogger{log},
	}
}

// startError is an error that stopped the app before it served anything.
type startError struct{ err error }

func (e startError) Error() string { return e.err.Error() }
func (e startError) Unwrap() error { return e.err }

// fasthttpLogger sends the server's own messages (connection errors) to the
// structured log.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn(fmt.Sprintf(format, args...))
}
