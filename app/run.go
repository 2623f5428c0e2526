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

// The timeouts of both servers, fasthttp's and the epoll loop's.
const (
	readTimeout  = 5 * time.Second  // to read one request, headers and body
	idleTimeout  = 60 * time.Second // for the next request on a kept-alive connection
	writeTimeout = 10 * time.Second // to write one answer
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
		// The live heap is a few MiB of per-connection buffers, and the app
		// allocates per Redis round trip, not per request: collecting at
		// 25% growth instead of 100% costs no throughput that make bench
		// can see, and cuts peak RSS by 3 MiB (21 to 18 MiB at c=256).
		debug.SetGCPercent(gcPercent)
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))

	// go-redis answers /readyz's PING; the count has a connection of its
	// own (incrConn).
	rdb := redis.NewClient(&redis.Options{
		Addr:                  cfg.redisAddr,
		DialTimeout:           cfg.redisTimeout,
		ReadTimeout:           cfg.redisTimeout,
		WriteTimeout:          cfg.redisTimeout,
		PoolTimeout:           cfg.redisTimeout,
		ContextTimeoutEnabled: true,
		// One PING within one timeout: /readyz answers within it.
		MaxRetries: -1,
		// Skip CLIENT SETINFO on every new connection: one round trip less
		// when the pool refills after Redis comes back.
		DisableIdentity: true,
	})
	defer rdb.Close()
	counter := newBatcher(&incrConn{addr: cfg.redisAddr, timeout: cfg.redisTimeout}, counterKey)
	defer counter.Close()

	ln, err := net.Listen("tcp", cfg.listenAddr)
	if err != nil {
		return startError{fmt.Errorf("listen on LISTEN_ADDR=%q: %w", cfg.listenAddr, err)}
	}

	reg := prometheus.NewRegistry()
	h := newHandler(counter, rdb, cfg.redisTimeout, newMetrics(reg), reg, log)
	srv := &fasthttp.Server{
		Handler: h.serve,
		// ReadTimeout bounds reading one request, headers and body, as
		// net/http's ReadHeaderTimeout did; IdleTimeout a keep-alive wait.
		ReadTimeout:  readTimeout,
		IdleTimeout:  idleTimeout,
		WriteTimeout: writeTimeout,
		// No route takes a body.
		MaxRequestBodySize: 64 << 10,
		CloseOnShutdown:    true,
		// A worker goroutine per connection stays for this long after its
		// connection goes idle: after a burst the count soon comes back down.
		MaxIdleWorkerDuration: time.Second,
		NoDefaultServerHeader: true,
		Logger:                fasthttpLogger{log},
	}
	fast, err := newLoop(ln, h, log, cfg.redisAddr, cfg.redisTimeout)
	if err != nil {
		ln.Close()
		return startError{fmt.Errorf("serve on %s: %w", ln.Addr(), err)}
	}
	log.Info("listening", "addr", ln.Addr().String(), "redis", cfg.redisAddr)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(fast.handoff) }()
	loopErr := make(chan error, 1)
	go func() { loopErr <- fast.run() }()

	// stopFasthttp stops fasthttp, and its listener even if Serve has not
	// begun (Shutdown leaves it alone then).
	stopFasthttp := func() {
		_ = srv.Shutdown()
		fast.handoff.Close()
		<-serveErr
	}
	select {
	case err := <-serveErr:
		fast.stop()
		<-loopErr
		fast.handoff.Close()
		return fmt.Errorf("serve: %w", err)
	case err := <-loopErr:
		stopFasthttp()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.shutdownTimeout.String())
	if err := shutdown(fast, srv, loopErr, stopFasthttp, cfg.shutdownTimeout); err != nil {
		return err
	}
	// Serve returns nil once shutdown has begun.
	if err := <-serveErr; err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

// shutdown drains both servers under one deadline. The loop stops handing
// connections over first; fasthttp takes the ones it was already given, and
// then both answer what they have and close.
func shutdown(fast *loop, srv *fasthttp.Server, loopErr chan error, stopFasthttp func(), timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	fast.stop()
	handedOver := make(chan struct{})
	go func() {
		select {
		case <-fast.draining:
		case <-ctx.Done():
		}
		fast.handoff.given.Wait()
		close(handedOver)
	}()
	select {
	case <-handedOver:
	case err := <-loopErr:
		if err != nil {
			stopFasthttp()
			return fmt.Errorf("serve: %w", err)
		}
		// Drained already, with nothing left to hold it.
		loopErr <- nil
		<-handedOver
	}
	shutErr := make(chan error, 1)
	go func() {
		err := srv.ShutdownWithContext(ctx)
		fast.handoff.Close() // in case Serve had not begun
		shutErr <- err
	}()
	select {
	case err := <-loopErr:
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	case <-ctx.Done():
		fast.abort()
		<-loopErr
		return fmt.Errorf("shutdown: %w", ctx.Err())
	}
	if err := <-shutErr; err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
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
