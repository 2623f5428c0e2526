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
}

// appPoint is one concurrency level: each figure the median of Runs, which
// were interleaved with the other points' runs, with the other app's and
// with each other.
type appPoint struct {
	Conns int `json:"connections"`
	appLoads
	// RatioHealthz is GET / over the app's own HTTP ceiling, a route that
	// does nothing: what counting costs.
	RatioHealthz float64  `json:"ratio_app_over_healthz"`
	Ratio        float64  `json:"ratio_app_over_redis"`
	Runs         []appRun `json:"runs"`
}

// appRun is one round of a point, every load of the round in Order (both
// apps' when a baseline runs); its figures are one app's and the round's
// redis-benchmark.
type appRun struct {
	Order []string `json:"order"`
	appLoads
	CounterChecks string `json:"counter_check"`
}

// appResult is what the bench measured of one app binary.
type appResult struct {
	Revision   string     `json:"revision"`
	From       string     `json:"built_from"`
	Points     []appPoint `json:"points"`
	PeakRSSMiB float64    `json:"peak_rss_mib"`
	HalfRate   float64    `json:"half_peak_rate"`
	HalfP50MS  float64    `json:"half_peak_p50_ms"`
	HalfP99MS  float64    `json:"half_peak_p99_ms"`
	Exact      string     `json:"exact_check"`
	ExactOK    bool       `json:"exact_check_ok"`
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
}

// appTarget is an app binary the bench runs: the app under test, named
// "app", or the baseline.
type appTarget struct {
	name string
	addr string
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
				measure[t.name+" GET /"] = func() (err error) {
					r.AppRPS, r.AppP50MS, r.AppP99MS, r.CounterChecks, err = countedWrk(ctx, t.addr, counter, c, o.d)
					return err
				}
				measure[t.name+" GET /healthz"] = func() (err error) {
					r.HealthzRPS, r.HealthzP50MS, r.HealthzP99MS, _, _, err = wrk(ctx, t.addr, "/healthz", c, o.d)
					return err
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
		}
	}

	for _, t := range targets {
		if err := exactCheck(ctx, t, counter, o.d, progress); err != nil {
			return nil, err
		}
	}
	// Latency at half of each app's own peak throughput, open loop.
	for _, t := range targets {
		peak := 0.0
		for _, p := range t.res.Points {
			peak = max(peak, p.AppRPS)
		}
		t.res.HalfRate = peak / 2
		fmt.Fprintf(progress, "app: %s: latency at half of its peak, %.0f req/s for %s\n", t.name, t.res.HalfRate, o.d)
		half, err := load(t.addr, 64, t.res.HalfRate, o.d)
		if err != nil {
			return nil, fmt.Errorf("%s: half-peak load: %w", t.name, err)
		}
		t.res.HalfP50MS = ms(half.percentile(0.50))
		t.res.HalfP99MS = ms(half.percentile(0.99))
	}
	for _, t := range targets {
		t.res.PeakRSSMiB = peakRSS(t.p.cmd.Process.Pid)
	}
	return rep, nil
}

// loadCycle is the order of a round's loads before it is turned: the apps'
// GET / side by side, then their /healthz, so the two apps' figures of a
// round are taken close together.
func loadCycle(targets []*appTarget) []string {
	cycle := []string{"redis-benchmark"}
	for _, route := range []string{"GET /", "GET /healthz"} {
		for _, t := range targets {
			cycle = append(cycle, t.name+" "+route)
		}
	}
	return cycle
}

// turn returns cycle started n places later.
func turn(cycle []string, n int) []string {
	n %= len(cycle)
	return append(slices.Clone(cycle[n:]), cycle[:n]...)
}

// pointOf is a point's figures: the medians of its runs.
func pointOf(c int, rs []appRun) appPoint {
	p := appPoint{Conns: c, Runs: rs, appLoads: appLoads{
		AppRPS:       median(rs, func(r appRun) float64 { return r.AppRPS }),
		AppP50MS:     median(rs, func(r appRun) float64 { return r.AppP50MS }),
		AppP99MS:     median(rs, func(r appRun) float64 { return r.AppP99MS }),
		HealthzRPS:   median(rs, func(r appRun) float64 { return r.HealthzRPS }),
		HealthzP50MS: median(rs, func(r appRun) float64 { return r.HealthzP50MS }),
		HealthzP99MS: median(rs, func(r appRun) float64 { return r.HealthzP99MS }),
		RedisRPS:     median(rs, func(r appRun) float64 { return r.RedisRPS }),
		RedisP50MS:   median(rs, func(r appRun) float64 { return r.RedisP50MS }),
		RedisP99MS:   median(rs, func(r appRun) float64 { return r.RedisP99MS }),
	}}
	p.Ratio = p.AppRPS / p.RedisRPS
	p.RatioHealthz = p.AppRPS / p.HealthzRPS
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
	res, err := load(t.addr, 64, 0, d)
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
func countedWrk(ctx context.Context, appAddr string, counter *counterStore, c int, d time.Duration) (rps, p50, p99 float64, check string, err error) {
	if err := quiesce(ctx, counter); err != nil {
		return 0, 0, 0, "", err
	}
	if err := counter.reset(ctx); err != nil {
		return 0, 0, 0, "", err
	}
	rps, p50, p99, requests, non2xx, err := wrk(ctx, appAddr, "/", c, d)
	if err != nil {
		return 0, 0, 0, "", err
	}
	n, err := counter.get(ctx)
	if err != nil {
		return 0, 0, 0, "", err
	}
	// wrk stops without reading the answers still in flight, so the
	// counter may be ahead of wrk's count by at most one per connection.
	ok := int64(requests - non2xx)
	check = fmt.Sprintf("counter %d, wrk saw %d ok + up to %d in flight", n, ok, c)
	if n < ok || n > ok+int64(c) {
		return 0, 0, 0, check, fmt.Errorf("counter %d but wrk saw %d successful answers (+%d in flight at most)", n, ok, c)
	}
	return rps, p50, p99, check, nil
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
	wrkPercent = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)`)
)

// wrk loads path on addr with c connections for d and parses its report.
func wrk(ctx context.Context, addr, path string, c int, d time.Duration) (rps, p50, p99 float64, requests, non2xx int, err error) {
	threads := min(2, c)
	out, err := exec.CommandContext(ctx, "wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(c),
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency", "http://"+addr+path).Output()
	if err != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("wrk: %w", err)
	}
	s := string(out)
	m := wrkRPS.FindStringSubmatch(s)
	t := wrkTotal.FindStringSubmatch(s)
	if m == nil || t == nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("wrk printed %q", s)
	}
	rps, _ = strconv.ParseFloat(m[1], 64)
	requests, _ = strconv.Atoi(t[1])
	if n := wrkNon2xx.FindStringSubmatch(s); n != nil {
		non2xx, _ = strconv.Atoi(n[1])
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
			p50 = v
		} else {
			p99 = v
		}
	}
	return rps, p50, p99, requests, non2xx, nil
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
