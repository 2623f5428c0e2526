package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/kodekloud/counter/internal/welcome"
)

// counterKey is the Redis key the seed app counts visits in.
const counterKey = "visitorCount"

// counter hands out visit numbers.
type counter interface {
	Incr() (int64, error)
}

// pinger is the part of the Redis client /readyz uses.
type pinger interface {
	Ping(ctx context.Context) *redis.StatusCmd
}

// metrics are the Prometheus series the app exports. Labels are limited to
// the route and status code so their number stays fixed.
type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	redisErrors prometheus.Counter
	// uncertain counts the visits answered 503 whose INCRBY may still have
	// been applied: visitorCount - 200 answers lies between 0 and it.
	uncertain prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "counter_http_requests_total",
			Help: "HTTP requests served, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "counter_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "counter_redis_errors_total",
			Help: "Redis commands that failed or timed out.",
		}),
		uncertain: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "counter_visits_uncertain_total",
			Help: "Visits answered 503 whose INCRBY was sent and may have been applied by Redis: visitorCount minus the 200 answers lies between 0 and this.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.redisErrors, m.uncertain)
	return m
}

// handler serves the counter and the health, readiness and metrics routes.
type handler struct {
	counter counter
	db      pinger
	timeout time.Duration
	m       *metrics
	log     *slog.Logger
	metrics fasthttp.RequestHandler

	// ok200 and err503 are the per-route series, looked up once so the hot
	// path does no label hashing.
	ok200, err503 prometheus.Counter
	rootDuration  prometheus.Observer
}

func newHandler(c counter, db pinger, timeout time.Duration, m *metrics, g prometheus.Gatherer, log *slog.Logger) *handler {
	return &handler{
		counter: c, db: db, timeout: timeout, m: m, log: log,
		metrics:      fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(g, promhttp.HandlerOpts{})),
		ok200:        m.requests.WithLabelValues("/", "200"),
		err503:       m.requests.WithLabelValues("/", "503"),
		rootDuration: m.duration.WithLabelValues("/"),
	}
}

// serve routes a request. GET / counts a visit, so it takes GET only; the
// other routes also answer HEAD, as monitors send it. A request without a
// well-formed Host is refused before any route sees it, so it counts no
// visit.
func (h *handler) serve(ctx *fasthttp.RequestCtx) {
	if !validHost(ctx.Request.Header.Host(), ctx.Request.Header.IsHTTP11()) {
		ctx.Error("400 bad request: malformed Host header\n", fasthttp.StatusBadRequest)
		ctx.SetConnectionClose()
		return
	}
	var route fasthttp.RequestHandler
	switch string(ctx.Path()) {
	case "/":
		if !ctx.IsGet() {
			methodNotAllowed(ctx, "GET")
			return
		}
		h.count(ctx)
		return
	case "/healthz":
		route = h.healthz
	case "/readyz":
		route = h.readyz
	case "/metrics":
		route = h.metrics
	default:
		ctx.Error("404 page not found\n", fasthttp.StatusNotFound)
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		methodNotAllowed(ctx, "GET, HEAD")
		return
	}
	route(ctx)
}

func methodNotAllowed(ctx *fasthttp.RequestCtx, allow string) {
	// Error resets the headers, so Allow comes after it.
	ctx.Error("405 method not allowed\n", fasthttp.StatusMethodNotAllowed)
	ctx.Response.Header.Set(fasthttp.HeaderAllow, allow)
}

// What GET / answers.
const (
	textPlain       = "text/plain; charset=utf-8"
	unavailableText = "Service Unavailable: the visitor counter cannot reach Redis\n"
)

// count answers with this request's own number from the counter, so no two
// requests can show the same number.
func (h *handler) count(ctx *fasthttp.RequestCtx) {
	start := ctx.Time() // when fasthttp began serving it: no clock read of our own
	n, err := h.counter.Incr()
	ctx.SetContentType(textPlain)
	if err != nil {
		h.m.redisErrors.Inc()
		h.err503.Inc()
		if mayHaveCounted(err) {
			h.m.uncertain.Inc()
		}
		h.log.Error("redis INCRBY failed", "key", counterKey, "err", err)
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetBodyString(unavailableText)
		h.rootDuration.Observe(time.Since(start).Seconds())
		return
	}
	// Appended to the response's pooled buffer: no allocation per request.
	var digits [20]byte
	ctx.Response.AppendBodyString(welcome.Prefix)
	ctx.Response.AppendBody(strconv.AppendInt(digits[:0], n, 10))
	h.ok200.Inc()
	h.rootDuration.Observe(time.Since(start).Seconds())
}

func (h *handler) healthz(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType(textPlain)
	ctx.SetBodyString("ok\n")
}

// readyz answers 200 only while Redis answers PING, so Consul and Nomad stop
// sending traffic to an instance that cannot count.
func (h *handler) readyz(ctx *fasthttp.RequestCtx) {
	pctx, cancel := context.WithTimeout(context.Background(), h.timeout)
	err := h.db.Ping(pctx).Err()
	cancel()
	ctx.SetContentType(textPlain)
	if err != nil {
		h.m.redisErrors.Inc()
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetBodyString("not ready: redis: " + err.Error() + "\n")
		return
	}
	ctx.SetBodyString("ready\n")
}

// validHost reports whether host is a Host header's value a client may send:
// a host name, an IPv4 address or a bracketed IPv6 address, each with an
// optional port, as net/url reads it. "a b", "evil.com/@x" and "[::1" are
// not. HTTP/1.1 requires one (RFC 9112, 3.2); an HTTP/1.0 request may come
// without, as HAProxy's health checks do.
func validHost(host []byte, http11 bool) bool {
	if len(host) == 0 {
		return !http11
	}
	if len(host) > 255 {
		return false
	}
	return plainHost(host) || urlHost(string(host))
}

// plainHost reports whether host is letters, digits, dots and dashes, with
// an optional port of one to five digits: the Host of nearly every request,
// checked without an allocation. Every such host is one urlHost accepts
// (FuzzPlainHostIsURLHost); anything else goes to urlHost.
func plainHost(host []byte) bool {
	name, port := host, []byte(nil)
	if i := bytes.IndexByte(host, ':'); i >= 0 {
		name, port = host[:i], host[i+1:]
		if len(port) == 0 || len(port) > 5 {
			return false
		}
	}
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// urlHost reports whether net/url reads host as a URL's host and nothing
// more: no user, path, query or fragment.
func urlHost(host string) bool {
	u, err := url.Parse("http://" + host)
	return err == nil && u.Host == host && u.User == nil &&
		u.Path == "" && u.RawQuery == "" && u.Fragment == "" && !u.ForceQuery
}
