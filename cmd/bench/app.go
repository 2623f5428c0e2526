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

	"github.com/kodekloud/counter/internal/resp"
)

// appLoads are the three loads of a point: the app's GET / and GET /healthz
// under wrk, and Redis under redis-benchmark.
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
// were interleaved with the other points' runs and with each other.
type appPoint struct {
	Conns int `json:"connections"`
	appLoads
	// RatioHealthz is GET / over the app's own HTTP ceiling, a route that
	// does nothing: what counting costs.
	RatioHealthz float64  `json:"ratio_app_over_healthz"`
	Ratio        float64  `json:"ratio_app_over_redis"`
	Runs         []appRun `json:"runs"`
}

// appRun is one round of a point, its loads in Order.
type appRun struct {
	Order []string `json:"order"`
	appLoads
	CounterChecks string `json:"counter_check"`
}

type appReport struct {
	Points      []appPoint `json:"points"`
	Rounds      int        `json:"rounds"`
	PeakRSSMiB  float64    `json:"app_peak_rss_mib"`
	HalfRate    float64    `json:"half_peak_rate"`
	HalfP50MS   float64    `json:"half_peak_p50_ms"`
	HalfP99MS   float64    `json:"half_peak_p99_ms"`
	Exact       string     `json:"exact_check"`
	ExactOK     bool       `json:"exact_check_ok"`
	Duration    string     `json:"duration_per_point"`
	AppRevision string     `json:"app"`
}

// benchApp runs the app and Redis and loads both at each concurrency.
func benchApp(ctx context.Context, root, work string, conns []int, rounds int, d time.Duration, progress io.Writer) (*appReport, error) {
	for _, tool := range []string{"redis-server", "redis-benchmark", "wrk"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found: install Debian's redis-server, redis-tools and wrk packages", tool)
		}
	}
	redisPort, appPort := freePort(), freePort()
	redisAddr := fmt.Sprintf("127.0.0.1:%d", redisPort)
	appAddr := fmt.Sprintf("127.0.0.1:%d", appPort)
	redis, err := startProc(ctx, filepath.Join(work, "redis.log"), nil, "redis-server",
		"--bind", "127.0.0.1", "--port", strconv.Itoa(redisPort), "--save", "", "--appendonly", "no")
	if err != nil {
		return nil, err
	}
	defer redis.stop()
	if err := waitFor(10*time.Second, func() error { return resp.Ping(redisAddr) }); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	appBin := filepath.Join(work, "app")
	// Built as the Dockerfile builds it, so the RSS is the shipped binary's.
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", appBin, filepath.Join(root, "app"))
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./app: %v\n%s", err, out)
	}
	app, err := startProc(ctx, filepath.Join(work, "app.log"),
		[]string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(redisPort), "LISTEN_ADDR=" + appAddr}, appBin)
	if err != nil {
		return nil, err
	}
	defer app.stop()
	if err := waitFor(10*time.Second, func() error { return httpOK("http://" + appAddr + "/readyz") }); err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}

	rep := &appReport{Duration: d.String(), AppRevision: gitRevision(root), Rounds: rounds}
	runs := make([][]appRun, len(conns))
	// Rounds outside, points inside, and each round a different order of
	// the three loads: the machine's drift and its neighbours' bursts spread
	// over every point and every load instead of landing on one.
	for round := range rounds {
		for i, c := range conns {
			run := appRun{}
			measure := map[string]func() error{
				"redis-benchmark": func() (err error) {
					run.RedisRPS, run.RedisP50MS, run.RedisP99MS, err = redisBenchmark(ctx, redisPort, c, d)
					return err
				},
				"GET /": func() (err error) {
					run.AppRPS, run.AppP50MS, run.AppP99MS, run.CounterChecks, err = countedWrk(ctx, appAddr, redisAddr, c, d)
					return err
				},
				"GET /healthz": func() (err error) {
					run.HealthzRPS, run.HealthzP50MS, run.HealthzP99MS, _, _, err = wrk(ctx, appAddr, "/healthz", c, d)
					return err
				},
			}
			order := []string{"redis-benchmark", "GET /", "GET /healthz"}
			for range (round + i) % len(order) {
				order = append(order[1:], order[0])
			}
			run.Order = order
			fmt.Fprintf(progress, "app: round %d/%d, c=%d: %s, %s each\n", round+1, rounds, c, strings.Join(order, ", "), d)
			for _, what := range order {
				if err := measure[what](); err != nil {
					return nil, fmt.Errorf("c=%d: %s: %w", c, what, err)
				}
			}
			runs[i] = append(runs[i], run)
		}
	}
	for i, c := range conns {
		rs := runs[i]
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
		rep.Points = append(rep.Points, p)
	}

	// The exact check: a load generator that waits for every answer. wrk
	// leaves requests in flight when it stops; the app still answers them,
	// so wait until the counter is still before resetting it.
	if err := quiesce(redisAddr); err != nil {
		return nil, err
	}
	if _, err := resp.Do(redisAddr, "SET", "visitorCount", "0"); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "app: exact counter check, c=64 for %s\n", d)
	res, err := load(appAddr, 64, 0, d)
	if err != nil {
		return nil, fmt.Errorf("exact check: %w", err)
	}
	final, _ := resp.Do(redisAddr, "GET", "visitorCount")
	n, _ := strconv.ParseInt(final, 10, 64)
	slices.Sort(res.Counts)
	distinct := len(slices.Compact(slices.Clone(res.Counts)))
	rep.ExactOK = n == int64(res.OK) && distinct == res.OK && res.Failed == 0
	rep.Exact = fmt.Sprintf("%d successful answers, %d distinct counts, %d failed; counter %d", res.OK, distinct, res.Failed, n)
	if !rep.ExactOK {
		return rep, fmt.Errorf("counter check failed: %s", rep.Exact)
	}

	// Latency at half of the peak throughput, open loop.
	peak := 0.0
	for _, p := range rep.Points {
		peak = max(peak, p.AppRPS)
	}
	rep.HalfRate = peak / 2
	fmt.Fprintf(progress, "app: latency at half of peak, %.0f req/s for %s\n", rep.HalfRate, d)
	half, err := load(appAddr, 64, rep.HalfRate, d)
	if err != nil {
		return nil, fmt.Errorf("half-peak load: %w", err)
	}
	rep.HalfP50MS = ms(half.percentile(0.50))
	rep.HalfP99MS = ms(half.percentile(0.99))
	rep.PeakRSSMiB = peakRSS(app.cmd.Process.Pid)
	return rep, nil
}

// countedWrk loads GET / with wrk from a counter at zero, then checks the
// counter against the answers wrk saw.
func countedWrk(ctx context.Context, appAddr, redisAddr string, c int, d time.Duration) (rps, p50, p99 float64, check string, err error) {
	if err := quiesce(redisAddr); err != nil {
		return 0, 0, 0, "", err
	}
	if _, err := resp.Do(redisAddr, "SET", "visitorCount", "0"); err != nil {
		return 0, 0, 0, "", err
	}
	rps, p50, p99, requests, non2xx, err := wrk(ctx, appAddr, "/", c, d)
	if err != nil {
		return 0, 0, 0, "", err
	}
	final, _ := resp.Do(redisAddr, "GET", "visitorCount")
	// wrk stops without reading the answers still in flight, so the
	// counter may be ahead of wrk's count by at most one per connection.
	n, _ := strconv.Atoi(final)
	ok := requests - non2xx
	check = fmt.Sprintf("counter %d, wrk saw %d ok + up to %d in flight", n, ok, c)
	if n < ok || n > ok+c {
		return 0, 0, 0, check, fmt.Errorf("counter %d but wrk saw %d successful answers (+%d in flight at most)", n, ok, c)
	}
	return rps, p50, p99, check, nil
}

// quiesce waits until the counter stops moving: the answers to a previous
// load's abandoned requests have all been counted.
func quiesce(redisAddr string) error {
	last := ""
	for range 100 {
		v, err := resp.Do(redisAddr, "GET", "visitorCount")
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
