package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// appLoads are the three loads of a point for one app: its GET / and GET
// /healthz under wrk, and Redis under redis-benchmark in the same round.
type appLoads struct {
	AppRPS       float64 `json:"app_rps"`
	AppP50MS     float64 `json:"app_p50_ms"`
	AppP99MS     float64 `json:"app_p99_ms"`
	HealthzRPS   float64 `json:"healthz_rps"`
	HealthzP50MS float64 `json:"healthz_p50_ms"`
	HealthzP99MS float64 `json:"healthz_p99_ms"`
	RedisRPS     float64 `json:"redis_benchmark_incr_rps"`
	RedisP50MS   float64 `json:"redis_benchmark_p50_ms"`
	RedisP99MS   float64 `json:"redis_benchmark_p99_ms"`
	// The same GET / under wrk through the front door, when the app has
	// one.
	FrontDoorRPS   float64 `json:"front_door_rps,omitempty"`
	FrontDoorP50MS float64 `json:"front_door_p50_ms,omitempty"`
	FrontDoorP99MS float64 `json:"front_door_p99_ms,omitempty"`
}

// appPoint is one concurrency level: each figure the median of Runs, which
// were interleaved with the other points' runs, with the other app's and
// with each other.
type appPoint struct {
	Conns int `json:"connections"`
	appLoads
	// RatioHealthz is GET / over the app's own HTTP ceiling, a route that
	// does nothing: what counting costs.
	RatioHealthz float64 `json:"ratio_app_over_healthz"`
	Ratio        float64 `json:"ratio_app_over_redis"`
	// RatioFrontDoor is GET / through the front door over GET / direct.
	RatioFrontDoor float64  `json:"ratio_front_door_over_direct,omitempty"`
	Runs           []appRun `json:"runs"`
}

// appRun is one round of a point, every load of the round in Order (both
// apps' when a baseline runs); its figures are one app's and the round's
// redis-benchmark.
type appRun struct {
	Order []string `json:"order"`
	appLoads
	CounterChecks string `json:"counter_check"`
	// FrontDoorFailed is the requests through the front door that got no
	// 200 or a socket error.
	FrontDoorFailed int `json:"front_door_failed,omitempty"`
}

// halfRun is one round of the loads at half of an app's peak, open loop:
// GET / and GET /healthz direct and, when the app has a front door, GET /
// through it, all at the same rate.
type halfRun struct {
	Order          []string `json:"order"`
	P50MS          float64  `json:"p50_ms"`
	P99MS          float64  `json:"p99_ms"`
	HealthzP50MS   float64  `json:"healthz_p50_ms"`
	HealthzP99MS   float64  `json:"healthz_p99_ms"`
	FrontDoorP50MS float64  `json:"front_door_p50_ms,omitempty"`
	FrontDoorP99MS float64  `json:"front_door_p99_ms,omitempty"`
	// GET / direct and through the front door at half of the front
	// door's own peak, a rate it can carry.
	DirectAtDoorHalfP50MS float64 `json:"direct_at_front_door_half_peak_p50_ms,omitempty"`
	DirectAtDoorHalfP99MS float64 `json:"direct_at_front_door_half_peak_p99_ms,omitempty"`
	DoorAtDoorHalfP50MS   float64 `json:"front_door_at_its_half_peak_p50_ms,omitempty"`
	DoorAtDoorHalfP99MS   float64 `json:"front_door_at_its_half_peak_p99_ms,omitempty"`
}

// appResult is what the bench measured of one app binary.
type appResult struct {
	Revision   string     `json:"revision"`
	From       string     `json:"built_from"`
	Points     []appPoint `json:"points"`
	PeakRSSMiB float64    `json:"peak_rss_mib"`
	// At half of the peak GET / rate, open loop, the medians of HalfRuns.
	// /healthz at the same rate is the tail of the machine and the load
	// generator, without counting.
	HalfRate         float64   `json:"half_peak_rate"`
	HalfP50MS        float64   `json:"half_peak_p50_ms"`
	HalfP99MS        float64   `json:"half_peak_p99_ms"`
	HalfHealthzP50MS float64   `json:"half_peak_healthz_p50_ms"`
	HalfHealthzP99MS float64   `json:"half_peak_healthz_p99_ms"`
	HalfRuns         []halfRun `json:"half_peak_runs"`
	Exact            string    `json:"exact_check"`
	ExactOK          bool      `json:"exact_check_ok"`
	// FrontDoor says what stood in front of the app ("" for nothing):
	// HAProxy with the local stack's config. Its figures at half of the
	// peak are through it at HalfRate; Added is the median over the rounds
	// of its figure minus GET / direct in the same round.
	FrontDoor          string  `json:"front_door,omitempty"`
	FrontDoorHalfP50MS float64 `json:"front_door_half_peak_p50_ms,omitempty"`
	FrontDoorHalfP99MS float64 `json:"front_door_half_peak_p99_ms,omitempty"`
	FrontDoorAddedP50  float64 `json:"front_door_added_p50_ms,omitempty"`
	FrontDoorAddedP99  float64 `json:"front_door_added_p99_ms,omitempty"`
	// At half of the front door's own peak (below the direct one when
	// the hop costs CPU), the same comparison: what the hop adds when the
	// front door is not the bottleneck.
	FrontDoorOwnHalfRate  float64 `json:"front_door_own_half_peak_rate,omitempty"`
	FrontDoorOwnHalfP99MS float64 `json:"front_door_own_half_peak_p99_ms,omitempty"`
	FrontDoorOwnAddedP50  float64 `json:"front_door_own_half_peak_added_p50_ms,omitempty"`
	FrontDoorOwnAddedP99  float64 `json:"front_door_own_half_peak_added_p99_ms,omitempty"`
	// FrontDoorFailed counts the requests through the front door that did
	// not get a 200, under wrk and at half of the peak: any fails the run.
	FrontDoorFailed int `json:"front_door_failed"`
}

// appReport is the app half of a run: the app under test and, when one was
// asked for, a baseline built from another revision, measured in the same
// rounds on the same Redis.
type appReport struct {
	Rounds   int        `json:"rounds"`
	Duration string     `json:"duration_per_point"`
	App      *appResult `json:"app"`
	Baseline *appResult `json:"baseline,omitempty"`
}

// results returns the app's result, then the baseline's if there is one.
func (r *appReport) results() []*appResult {
	if r.Baseline == nil {
		return []*appResult{r.App}
	}
	return []*appResult{r.App, r.Baseline}
}

// appOptions are what benchApp measures and builds.
type appOptions struct {
	conns  []int
	rounds int
	d      time.Duration
	// appRev is the revision of the app under test, "" for the working
	// tree; baselineRev that of the baseline, "" for none.
	appRev, baselineRev string
	// frontDoor puts HAProxy, as the local stack runs it, in front of the
	// app under test, and loads GET / through it beside GET / direct.
	frontDoor bool
}

// appTarget is an app binary the bench runs: the app under test, named
// "app", or the baseline.
type appTarget struct {
	name string
	addr string
	door string // the front door's address, "" for none
	p    *proc
	res  *appResult
	runs [][]appRun // per point
}

// benchApp runs Redis and the app (and the baseline, if asked for) and loads
// each at each concurrency, the apps' loads interleaved.
func benchApp(ctx context.Context, root, work string, o appOptions, progress io.Writer) (*appReport, error) {
	for _, tool := range []string{"redis-server", "redis-benchmark", "wrk", "git", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found: install Debian's redis-server, redis-tools and wrk packages", tool)
		}
	}
	// Built before anything starts, so a revision that does not build
	// fails the run at once; both revisions are looked up before either
	// is built.
	type build struct{ name, rev string }
	builds := []build{{"app", o.appRev}}
	if o.baselineRev != "" {
		builds = append(builds, build{"baseline", o.baselineRev})
	}
	for _, b := range builds {
		if b.rev == "" {
			continue
		}
		if _, err := resolveRev(ctx, root, b.rev); err != nil {
			return nil, fmt.Errorf("%s: %w", b.name, err)
		}
	}
	var targets []*appTarget
	for _, b := range builds {
		built, err := buildApp(ctx, root, work, b.name, b.rev, progress)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.name, err)
		}
		targets = append(targets, &appTarget{name: b.name, res: &appResult{Revision: built.revision, From: built.from},
			runs: make([][]appRun, len(o.conns))})
		defer os.Remove(built.bin)
	}

	redisPort := freePort()
	redisAddr := fmt.Sprintf("127.0.0.1:%d", redisPort)
	redisProc, err := startProc(ctx, filepath.Join(work, "redis.log"), nil, "redis-server",
		"--bind", "127.0.0.1", "--port", strconv.Itoa(redisPort), "--save", "", "--appendonly", "no")
	if err != nil {
		return nil, err
	}
	defer redisProc.stop()
	if err := waitFor(10*time.Second, func() error { return pingRedis(ctx, redisAddr) }); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	counter := newCounterStore(redisAddr)
	defer counter.Close()
	for _, t := range targets {
		t.addr = fmt.Sprintf("127.0.0.1:%d", freePort())
		t.p, err = startProc(ctx, filepath.Join(work, t.name+".log"),
			[]string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(redisPort), "LISTEN_ADDR=" + t.addr}, filepath.Join(work, t.name))
		if err != nil {
			return nil, err
		}
		defer t.p.stop()
		if err := waitFor(10*time.Second, func() error { return httpOK("http://" + t.addr + "/readyz") }); err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
		fmt.Fprintf(progress, "app: %s %s (%s) listens on %s, Redis at %s\n", t.name, t.res.Revision, t.res.From, t.addr, redisAddr)
	}

	if o.frontDoor {
		fd, err := startFrontDoor(ctx, root, work, targets[0].addr, progress)
		if err != nil {
			return nil, fmt.Errorf("front door: %w", err)
		}
		defer fd.stop()
		targets[0].door, targets[0].res.FrontDoor = fd.addr, fd.what
	}

	rep := &appReport{Duration: o.d.String(), Rounds: o.rounds, App: targets[0].res}
	if len(targets) > 1 {
		rep.Baseline = targets[1].res
	}
	cycle := loadCycle(targets)
	// Rounds outside, points inside, and each round a different turn of
	// the cycle of loads: the machine's drift and its neighbours' bursts
	// spread over every point, every load and both apps instead of landing
	// on one.
	for round := range o.rounds {
		for i, c := range o.conns {
			var redisRun appLoads
			runs := make([]appRun, len(targets))
			measure := map[string]func() error{
				"redis-benchmark": func() (err error) {
					redisRun.RedisRPS, redisRun.RedisP50MS, redisRun.RedisP99MS, err = redisBenchmark(ctx, redisPort, c, o.d)
					return err
				},
			}
			for k, t := range targets {
				r := &runs[k]
				measure[t.name+" GET /"] = func() error {
					w, check, err := countedWrk(ctx, t.addr, counter, c, o.d)
					r.AppRPS, r.AppP50MS, r.AppP99MS, r.CounterChecks = w.rps, w.p50, w.p99, check
					return err
				}
				measure[t.name+" GET /healthz"] = func() error {
					w, err := wrk(ctx, t.addr, "/healthz", c, o.d)
					r.HealthzRPS, r.HealthzP50MS, r.HealthzP99MS = w.rps, w.p50, w.p99
					return err
				}
				if t.door != "" {
					measure[t.name+frontDoorLoad] = func() error {
						w, check, err := countedWrk(ctx, t.door, counter, c, o.d)
						r.FrontDoorRPS, r.FrontDoorP50MS, r.FrontDoorP99MS = w.rps, w.p50, w.p99
						r.CounterChecks += "; through the front door: " + check
						r.FrontDoorFailed = w.non2xx + w.socketErrors
						return err
					}
				}
			}
			order := turn(cycle, round+i)
			fmt.Fprintf(progress, "app: round %d/%d, c=%d: %s, %s each\n", round+1, o.rounds, c, strings.Join(order, ", "), o.d)
			for _, what := range order {
				if err := measure[what](); err != nil {
					return nil, fmt.Errorf("c=%d: %s: %w", c, what, err)
				}
			}
			for k, t := range targets {
				runs[k].Order = order
				runs[k].RedisRPS, runs[k].RedisP50MS, runs[k].RedisP99MS = redisRun.RedisRPS, redisRun.RedisP50MS, redisRun.RedisP99MS
				t.runs[i] = append(t.runs[i], runs[k])
			}
		}
	}
	for _, t := range targets {
		for i, c := range o.conns {
			t.res.Points = append(t.res.Points, pointOf(c, t.runs[i]))
			for _, r := range t.runs[i] {
				t.res.FrontDoorFailed += r.FrontDoorFailed
			}
		}
	}

	for _, t := range targets {
		if err := exactCheck(ctx, t, counter, o.d, progress); err != nil {
			return nil, err
		}
	}
	for _, t := range targets {
		if err := halfPeak(t, o, progress); err != nil {
			return nil, err
		}
	}
	for _, t := range targets {
		t.res.PeakRSSMiB = peakRSS(t.p.cmd.Process.Pid)
	}
	return rep, nil
}

// frontDoorLoad names the load of GET / through an app's front door, after
// the app's name.
const frontDoorLoad = " GET / front door"

// loadCycle is the order of a round's loads before it is turned: the apps'
// GET / side by side, the front door's next to its app's, then their
// /healthz, so the figures compared within a round are taken close
// together.
func loadCycle(targets []*appTarget) []string {
	cycle := []string{"redis-benchmark"}
	for _, route := range []string{"GET /", "GET /healthz"} {
		for _, t := range targets {
			cycle = append(cycle, t.name+" "+route)
			if route == "GET /" && t.door != "" {
				cycle = append(cycle, t.name+frontDoorLoad)
			}
		}
	}
	return cycle
}

// halfPeak measures t's latency at half of its peak GET / rate with the
// open-loop generator, in o.rounds rounds that each run, in a turned
// order, GET / and GET /healthz direct and GET / through t's front door,
// all at that rate.
func halfPeak(t *appTarget, o appOptions, progress io.Writer) error {
	peak := 0.0
	for _, p := range t.res.Points {
		peak = max(peak, p.AppRPS)
	}
	r := t.res
	r.HalfRate = peak / 2
	type halfLoad struct {
		addr, path string
		rate       float64
		p50, p99   func(*halfRun) *float64
	}
	loads := map[string]halfLoad{
		"GET /": {t.addr, "/", r.HalfRate, func(h *halfRun) *float64 { return &h.P50MS }, func(h *halfRun) *float64 { return &h.P99MS }},
		"GET /healthz": {t.addr, "/healthz", r.HalfRate,
			func(h *halfRun) *float64 { return &h.HealthzP50MS }, func(h *halfRun) *float64 { return &h.HealthzP99MS }},
	}
	cycle := []string{"GET /", "GET /healthz"}
	if t.door != "" {
		for _, p := range r.Points {
			r.FrontDoorOwnHalfRate = max(r.FrontDoorOwnHalfRate, p.FrontDoorRPS/2)
		}
		loads["GET / front door"] = halfLoad{t.door, "/", r.HalfRate,
			func(h *halfRun) *float64 { return &h.FrontDoorP50MS }, func(h *halfRun) *float64 { return &h.FrontDoorP99MS }}
		loads["GET / at the front door's half peak"] = halfLoad{t.addr, "/", r.FrontDoorOwnHalfRate,
			func(h *halfRun) *float64 { return &h.DirectAtDoorHalfP50MS }, func(h *halfRun) *float64 { return &h.DirectAtDoorHalfP99MS }}
		loads["GET / front door at its half peak"] = halfLoad{t.door, "/", r.FrontDoorOwnHalfRate,
			func(h *halfRun) *float64 { return &h.DoorAtDoorHalfP50MS }, func(h *halfRun) *float64 { return &h.DoorAtDoorHalfP99MS }}
		cycle = []string{"GET /", "GET / front door", "GET /healthz", "GET / at the front door's half peak", "GET / front door at its half peak"}
	}
	for round := range o.rounds {
		h := halfRun{Order: turn(cycle, round)}
		fmt.Fprintf(progress, "app: %s: half of its peak, %.0f req/s (the front door's: %.0f), round %d/%d: %s, %s each\n",
			t.name, r.HalfRate, r.FrontDoorOwnHalfRate, round+1, o.rounds, strings.Join(h.Order, ", "), o.d)
		for _, what := range h.Order {
			l := loads[what]
			res, err := load(l.addr, l.path, 64, l.rate, o.d)
			if err != nil {
				return fmt.Errorf("%s: %s at half of its peak: %w", t.name, what, err)
			}
			if l.addr == t.door {
				r.FrontDoorFailed += res.Failed
			}
			*l.p50(&h), *l.p99(&h) = ms(res.percentile(0.50)), ms(res.percentile(0.99))
		}
		r.HalfRuns = append(r.HalfRuns, h)
	}
	hs := r.HalfRuns
	r.HalfP50MS = median(hs, func(h halfRun) float64 { return h.P50MS })
	r.HalfP99MS = median(hs, func(h halfRun) float64 { return h.P99MS })
	r.HalfHealthzP50MS = median(hs, func(h halfRun) float64 { return h.HealthzP50MS })
	r.HalfHealthzP99MS = median(hs, func(h halfRun) float64 { return h.HealthzP99MS })
	if t.door != "" {
		r.FrontDoorHalfP50MS = median(hs, func(h halfRun) float64 { return h.FrontDoorP50MS })
		r.FrontDoorHalfP99MS = median(hs, func(h halfRun) float64 { return h.FrontDoorP99MS })
		// Paired within each round, so a neighbour's burst in one round
		// does not pass for the front door's cost.
		r.FrontDoorAddedP50 = median(hs, func(h halfRun) float64 { return h.FrontDoorP50MS - h.P50MS })
		r.FrontDoorAddedP99 = median(hs, func(h halfRun) float64 { return h.FrontDoorP99MS - h.P99MS })
		r.FrontDoorOwnHalfP99MS = median(hs, func(h halfRun) float64 { return h.DoorAtDoorHalfP99MS })
		r.FrontDoorOwnAddedP50 = median(hs, func(h halfRun) float64 { return h.DoorAtDoorHalfP50MS - h.DirectAtDoorHalfP50MS })
		r.FrontDoorOwnAddedP99 = median(hs, func(h halfRun) float64 { return h.DoorAtDoorHalfP99MS - h.DirectAtDoorHalfP99MS })
	}
	return nil
}

// turn returns cycle started n places later.
func turn(cycle []string, n int) []string {
	n %= len(cycle)
	return append(slices.Clone(cycle[n:]), cycle[:n]...)
}

// pointOf is a point's figures: the medians of its runs.
func pointOf(c int, rs []appRun) appPoint {
	p := appPoint{Conns: c, Runs: rs, appLoads: appLoads{
		AppRPS:         median(rs, func(r appRun) float64 { return r.AppRPS }),
		AppP50MS:       median(rs, func(r appRun) float64 { return r.AppP50MS }),
		AppP99MS:       median(rs, func(r appRun) float64 { return r.AppP99MS }),
		HealthzRPS:     median(rs, func(r appRun) float64 { return r.HealthzRPS }),
		HealthzP50MS:   median(rs, func(r appRun) float64 { return r.HealthzP50MS }),
		HealthzP99MS:   median(rs, func(r appRun) float64 { return r.HealthzP99MS }),
		RedisRPS:       median(rs, func(r appRun) float64 { return r.RedisRPS }),
		RedisP50MS:     median(rs, func(r appRun) float64 { return r.RedisP50MS }),
		RedisP99MS:     median(rs, func(r appRun) float64 { return r.RedisP99MS }),
		FrontDoorRPS:   median(rs, func(r appRun) float64 { return r.FrontDoorRPS }),
		FrontDoorP50MS: median(rs, func(r appRun) float64 { return r.FrontDoorP50MS }),
		FrontDoorP99MS: median(rs, func(r appRun) float64 { return r.FrontDoorP99MS }),
	}}
	p.Ratio = p.AppRPS / p.RedisRPS
	p.RatioHealthz = p.AppRPS / p.HealthzRPS
	if p.FrontDoorRPS > 0 {
		// Paired within each round, like the front door's latency.
		p.RatioFrontDoor = median(rs, func(r appRun) float64 { return r.FrontDoorRPS / r.AppRPS })
	}
	return p
}

// exactCheck loads t with a load generator that waits for every answer and
// checks that the counter equals the successes and that no count was given
// twice. A failed check is recorded in t's result, not returned: the report
// is still written, and run fails after writing it.
func exactCheck(ctx context.Context, t *appTarget, counter *counterStore, d time.Duration, progress io.Writer) error {
	// wrk leaves requests in flight when it stops; the app still answers
	// them, so wait until the counter is still before resetting it.
	if err := quiesce(ctx, counter); err != nil {
		return err
	}
	if err := counter.reset(ctx); err != nil {
		return err
	}
	fmt.Fprintf(progress, "app: %s: exact counter check, c=64 for %s\n", t.name, d)
	res, err := load(t.addr, "/", 64, 0, d)
	if err != nil {
		return fmt.Errorf("%s: exact check: %w", t.name, err)
	}
	n, err := counter.get(ctx)
	if err != nil {
		return err
	}
	slices.Sort(res.Counts)
	distinct := len(slices.Compact(slices.Clone(res.Counts)))
	t.res.ExactOK = n == int64(res.OK) && distinct == res.OK && res.Failed == 0
	t.res.Exact = fmt.Sprintf("%d successful answers, %d distinct counts, %d failed; counter %d", res.OK, distinct, res.Failed, n)
	return nil
}

// countedWrk loads GET / with wrk from a counter at zero, then checks the
// counter against the answers wrk saw.
func countedWrk(ctx context.Context, addr string, counter *counterStore, c int, d time.Duration) (w wrkResult, check string, err error) {
	if err := quiesce(ctx, counter); err != nil {
		return w, "", err
	}
	if err := counter.reset(ctx); err != nil {
		return w, "", err
	}
	if w, err = wrk(ctx, addr, "/", c, d); err != nil {
		return w, "", err
	}
	n, err := counter.get(ctx)
	if err != nil {
		return w, "", err
	}
	// wrk stops without reading the answers still in flight, so the
	// counter may be ahead of wrk's count by at most one per connection.
	ok := int64(w.requests - w.non2xx)
	check = fmt.Sprintf("counter %d, wrk saw %d ok + up to %d in flight", n, ok, c)
	if n < ok || n > ok+int64(c) {
		return w, check, fmt.Errorf("counter %d but wrk saw %d successful answers (+%d in flight at most)", n, ok, c)
	}
	return w, check, nil
}

// quiesce waits until the counter stops moving: the answers to a previous
// load's abandoned requests have all been counted.
func quiesce(ctx context.Context, counter *counterStore) error {
	last := int64(-1)
	for range 100 {
		v, err := counter.get(ctx)
		if err != nil {
			return err
		}
		if v == last {
			return nil
		}
		last = v
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the counter still moves 20s after the load stopped")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// redisBenchmark runs redis-benchmark -t incr with c clients for about d.
func redisBenchmark(ctx context.Context, port, c int, d time.Duration) (rps, p50, p99 float64, err error) {
	// Size the run for about d at the rate a quick probe shows.
	n := 20000
	probe, _, _, err := redisBenchmarkN(ctx, port, c, n)
	if err != nil {
		return 0, 0, 0, err
	}
	n = max(n, int(probe*d.Seconds()))
	return redisBenchmarkN(ctx, port, c, n)
}

func redisBenchmarkN(ctx context.Context, port, c, n int) (rps, p50, p99 float64, err error) {
	out, err := exec.CommandContext(ctx, "redis-benchmark", "-p", strconv.Itoa(port), "-t", "incr",
		"-c", strconv.Itoa(c), "-n", strconv.Itoa(n), "--csv").Output()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("redis-benchmark: %w", err)
	}
	rows, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil || len(rows) < 2 || len(rows[1]) < 7 {
		return 0, 0, 0, fmt.Errorf("redis-benchmark printed %q", out)
	}
	// "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
	rps, _ = strconv.ParseFloat(rows[1][1], 64)
	p50, _ = strconv.ParseFloat(rows[1][4], 64)
	p99, _ = strconv.ParseFloat(rows[1][6], 64)
	return rps, p50, p99, nil
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkTotal   = regexp.MustCompile(`(\d+) requests in`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSocket  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkPercent = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)`)
)

// wrkResult is what wrk reports of a load.
type wrkResult struct {
	rps, p50, p99    float64
	requests, non2xx int
	socketErrors     int // connect, read, write and timeout
}

// wrk loads path on addr with c connections for d and parses its report.
func wrk(ctx context.Context, addr, path string, c int, d time.Duration) (w wrkResult, err error) {
	threads := min(2, c)
	out, err := exec.CommandContext(ctx, "wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(c),
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency", "http://"+addr+path).Output()
	if err != nil {
		return w, fmt.Errorf("wrk: %w", err)
	}
	s := string(out)
	m := wrkRPS.FindStringSubmatch(s)
	t := wrkTotal.FindStringSubmatch(s)
	if m == nil || t == nil {
		return w, fmt.Errorf("wrk printed %q", s)
	}
	w.rps, _ = strconv.ParseFloat(m[1], 64)
	w.requests, _ = strconv.Atoi(t[1])
	if n := wrkNon2xx.FindStringSubmatch(s); n != nil {
		w.non2xx, _ = strconv.Atoi(n[1])
	}
	if e := wrkSocket.FindStringSubmatch(s); e != nil {
		for _, n := range e[1:] {
			k, _ := strconv.Atoi(n)
			w.socketErrors += k
		}
	}
	for _, pm := range wrkPercent.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseFloat(pm[2], 64)
		switch pm[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if pm[1] == "50" {
			w.p50 = v
		} else {
			w.p99 = v
		}
	}
	return w, nil
}

// peakRSS reads a process's high-water resident set size.
func peakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
