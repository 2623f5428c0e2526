package main

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
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
	}
	reg.MustRegister(m.requests, m.duration, m.redisErrors)
	return m
}

// handler serves the counter and the health, readiness and metrics routes.
type handler struct {
	counter counter
	db      pinger
	timeout time.Duration
	m       *metrics
	log     *slog.Logger
	mux     *http.ServeMux

	// ok200 and err503 are the per-route series, looked up once so the hot
	// path does no label hashing.
	ok200, err503 prometheus.Counter
	rootDuration  prometheus.Observer
}

func newHandler(c counter, db pinger, timeout time.Duration, m *metrics, g prometheus.Gatherer, log *slog.Logger) *handler {
	h := &handler{
		counter: c, db: db, timeout: timeout, m: m, log: log, mux: http.NewServeMux(),
		ok200:        m.requests.WithLabelValues("/", "200"),
		err503:       m.requests.WithLabelValues("/", "503"),
		rootDuration: m.duration.WithLabelValues("/"),
	}
	h.mux.HandleFunc("GET /{$}", h.count)
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

// count answers with this request's own number from the counter, so no two
// requests can show the same number.
func (h *handler) count(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	n, err := h.counter.Incr()
	// No header is set: touching w.Header() makes net/http copy the header
	// map on every response, and its content sniffing already answers
	// text/plain; charset=utf-8 for these bodies.
	if err != nil {
		h.m.redisErrors.Inc()
		h.err503.Inc()
		h.log.Error("redis INCRBY failed", "key", counterKey, "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("Service Unavailable: the visitor counter cannot reach Redis\n"))
		h.rootDuration.Observe(time.Since(start).Seconds())
		return
	}
	buf := make([]byte, 0, 64)
	buf = append(buf, "Welcome to KODEKLOUD! Visitor Count: "...)
	buf = strconv.AppendInt(buf, n, 10)
	_, _ = w.Write(buf)
	h.ok200.Inc()
	h.rootDuration.Observe(time.Since(start).Seconds())
}

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// readyz answers 200 only while Redis answers PING, so Consul and Nomad stop
// sending traffic to an instance that cannot count.
func (h *handler) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	err := h.db.Ping(ctx).Err()
	cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err != nil {
		h.m.redisErrors.Inc()
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: redis: " + err.Error() + "\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}
