package main

import (
	"fmt"
	"image/color"
	"io"
	"text/tabwriter"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

func writeTable(w io.Writer, rep *report) {
	fmt.Fprintf(w, "bench %s on %d cores\n", rep.Date, rep.Cores)
	if a := rep.App; a != nil {
		fmt.Fprintf(w, "\nApp GET / vs its own GET /healthz (the HTTP ceiling) and redis-benchmark -t incr on the same Redis,\n"+
			"median of %d interleaved runs of %s per point", a.Rounds, a.Duration)
		if a.Baseline != nil {
			fmt.Fprintf(w, ", the app and the baseline in the same rounds")
		}
		fmt.Fprintln(w)
		for _, r := range a.results() {
			writeAppResult(w, appName(a, r), r)
		}
		if a.Baseline != nil {
			writeSideBySide(w, a)
		}
	}
	if d := rep.Deployer; d != nil {
		fmt.Fprintf(w, "\nDeployer vs the nomad CLI on the same local stack (median of %d)\n", d.Rounds)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "what\tdeployer\tnomad CLI\tratio\tdeployer CPU\tdeployer peak RSS")
		for _, c := range d.Comparisons {
			base, ratio := "-", "-"
			if c.BaselineMS > 0 {
				base, ratio = fmt.Sprintf("%.0f ms", c.BaselineMS), fmt.Sprintf("%.2f", c.DeployerMS/c.BaselineMS)
			}
			fmt.Fprintf(tw, "%s\t%.0f ms\t%s\t%s\t%.0f ms\t%.1f MiB\n", c.What, c.DeployerMS, base, ratio, c.CPUMS, c.RSSMiB)
		}
		tw.Flush()
	}
}

// appName is how the report names r: "app <revision>" or "baseline
// <revision>".
func appName(a *appReport, r *appResult) string {
	if r == a.Baseline {
		return "baseline " + r.Revision
	}
	return "app " + r.Revision
}

func writeAppResult(w io.Writer, name string, r *appResult) {
	fmt.Fprintf(w, "\n%s (%s)\n", name, r.From)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "conns\tGET / req/s\tp50 ms\tp99 ms\t/healthz req/s\tp50 ms\tp99 ms\tredis INCR/s\tp50 ms\tp99 ms\t/ ÷ healthz\t/ ÷ redis\t")
	for _, p := range r.Points {
		fmt.Fprintf(tw, "%d\t%.0f\t%.2f\t%.2f\t%.0f\t%.2f\t%.2f\t%.0f\t%.3f\t%.3f\t%.2f\t%.2f\t\n",
			p.Conns, p.AppRPS, p.AppP50MS, p.AppP99MS, p.HealthzRPS, p.HealthzP50MS, p.HealthzP99MS,
			p.RedisRPS, p.RedisP50MS, p.RedisP99MS, p.RatioHealthz, p.Ratio)
	}
	tw.Flush()
	fmt.Fprintln(w, "runs (GET / ÷ healthz, GET / ÷ redis in each round):")
	for _, p := range r.Points {
		fmt.Fprintf(w, "  c=%d:", p.Conns)
		for _, run := range p.Runs {
			fmt.Fprintf(w, " %.0f/%.0f/%.0f (%.2f, %.2f)", run.AppRPS, run.HealthzRPS, run.RedisRPS, run.AppRPS/run.HealthzRPS, run.AppRPS/run.RedisRPS)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "at half of its peak (%.0f req/s, open loop, median of %d rounds): p50 %.2f ms, p99 %.2f ms; /healthz at the same rate (the machine's and the load generator's own tail): p50 %.2f ms, p99 %.2f ms\n",
		r.HalfRate, len(r.HalfRuns), r.HalfP50MS, r.HalfP99MS, r.HalfHealthzP50MS, r.HalfHealthzP99MS)
	fmt.Fprint(w, "  per round (GET / p99, /healthz p99):")
	for _, h := range r.HalfRuns {
		fmt.Fprintf(w, " %.2f/%.2f", h.P99MS, h.HealthzP99MS)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "peak RSS: %.1f MiB\n", r.PeakRSSMiB)
	fmt.Fprintf(w, "counter check (every answer read): %s\n", r.Exact)
	if r.FrontDoor != "" {
		writeFrontDoor(w, r)
	}
}

// writeFrontDoor is GET / through the front door beside GET / direct, from
// the same rounds.
func writeFrontDoor(w io.Writer, r *appResult) {
	fmt.Fprintf(w, "\nfront door: GET / through %s,\nbeside GET / direct in the same rounds (medians)\n", r.FrontDoor)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "conns\tdirect req/s\tp99 ms\tfront door req/s\tp99 ms\tfront door ÷ direct\t")
	for _, p := range r.Points {
		fmt.Fprintf(tw, "%d\t%.0f\t%.2f\t%.0f\t%.2f\t%.2f\t\n", p.Conns, p.AppRPS, p.AppP99MS, p.FrontDoorRPS, p.FrontDoorP99MS, p.RatioFrontDoor)
	}
	tw.Flush()
	fmt.Fprintf(w, "at half of the direct peak (%.0f req/s, open loop): direct p50 %.2f ms, p99 %.2f ms; front door p50 %.2f ms, p99 %.2f ms\n",
		r.HalfRate, r.HalfP50MS, r.HalfP99MS, r.FrontDoorHalfP50MS, r.FrontDoorHalfP99MS)
	fmt.Fprintf(w, "front door added (median of the rounds' differences): p50 %.2f ms, p99 %.2f ms; per round p99:", r.FrontDoorAddedP50, r.FrontDoorAddedP99)
	for _, h := range r.HalfRuns {
		fmt.Fprintf(w, " %+.2f", h.FrontDoorP99MS-h.P99MS)
	}
	fmt.Fprintln(w)
	doorPeak := 0.0
	for _, p := range r.Points {
		doorPeak = max(doorPeak, p.FrontDoorRPS)
	}
	if doorPeak < r.HalfRate {
		// Then its latency is a queue's, not the cost of a hop.
		fmt.Fprintf(w, "  that rate is above the front door's own peak in this run (%.0f req/s): its requests queued\n", doorPeak)
	}
	fmt.Fprintf(w, "at half of the front door's own peak (%.0f req/s): front door p99 %.2f ms, added p50 %.2f ms, p99 %.2f ms (medians of the rounds' differences); per round p99:",
		r.FrontDoorOwnHalfRate, r.FrontDoorOwnHalfP99MS, r.FrontDoorOwnAddedP50, r.FrontDoorOwnAddedP99)
	for _, h := range r.HalfRuns {
		fmt.Fprintf(w, " %+.2f", h.DoorAtDoorHalfP99MS-h.DirectAtDoorHalfP99MS)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "requests through the front door that failed: %d\n", r.FrontDoorFailed)
}

// writeSideBySide puts the app's figures beside the baseline's, both from
// this run.
func writeSideBySide(w io.Writer, a *appReport) {
	app, base := a.App, a.Baseline
	fmt.Fprintf(w, "\n%s beside %s, same run, same Redis, same loads (medians):\n", appName(a, app), appName(a, base))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\t\t%s\t%s\tapp ÷ baseline\n", appName(a, app), appName(a, base))
	for i, p := range app.Points {
		if i >= len(base.Points) {
			break
		}
		b := base.Points[i]
		fmt.Fprintf(tw, "c=%d\tGET / req/s\t%.0f\t%.0f\t%.2f\n", p.Conns, p.AppRPS, b.AppRPS, p.AppRPS/b.AppRPS)
		fmt.Fprintf(tw, "\tGET / ÷ its /healthz\t%.2f\t%.2f\t\n", p.RatioHealthz, b.RatioHealthz)
		fmt.Fprintf(tw, "\tGET / ÷ redis-benchmark\t%.2f\t%.2f\t\n", p.Ratio, b.Ratio)
		fmt.Fprintf(tw, "\tGET / p99 ms\t%.2f\t%.2f\t\n", p.AppP99MS, b.AppP99MS)
	}
	fmt.Fprintf(tw, "\tp99 ms at half of its peak\t%.2f (%.0f req/s)\t%.2f (%.0f req/s)\t\n", app.HalfP99MS, app.HalfRate, base.HalfP99MS, base.HalfRate)
	fmt.Fprintf(tw, "\tpeak RSS MiB\t%.1f\t%.1f\t%.2f\n", app.PeakRSSMiB, base.PeakRSSMiB, app.PeakRSSMiB/base.PeakRSSMiB)
	fmt.Fprintf(tw, "\tcounter check\t%s\t%s\t\n", okOrFailed(app.ExactOK), okOrFailed(base.ExactOK))
	tw.Flush()
}

func okOrFailed(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAILED"
}

func throughputChart(rep *report, path string) error {
	a := rep.App
	p := plot.New()
	p.Title.Text = fmt.Sprintf("GET / vs GET /healthz and redis-benchmark INCR, %d cores, %s", rep.Cores, rep.Date[:10])
	p.X.Label.Text = "concurrent connections (log scale)"
	p.Y.Label.Text = "requests per second (median)"
	type series struct {
		label string
		xys   plotter.XYs
	}
	var lines []series
	top := 0.0
	for _, r := range a.results() {
		n := appName(a, r)
		healthz, app := series{n + " GET /healthz (HTTP ceiling)", nil}, series{n + " GET / (counts in Redis)", nil}
		for _, pt := range r.Points {
			x := float64(pt.Conns)
			healthz.xys = append(healthz.xys, plotter.XY{X: x, Y: pt.HealthzRPS})
			app.xys = append(app.xys, plotter.XY{X: x, Y: pt.AppRPS})
			top = max(top, pt.AppRPS, pt.HealthzRPS)
		}
		lines = append(lines, healthz, app)
		if r.FrontDoor != "" {
			door := series{n + " GET / through the front door", nil}
			for _, pt := range r.Points {
				door.xys = append(door.xys, plotter.XY{X: float64(pt.Conns), Y: pt.FrontDoorRPS})
			}
			lines = append(lines, door)
		}
	}
	redis := series{"redis-benchmark -t incr", nil}
	var ticks []plot.Tick
	for i, pt := range a.App.Points {
		x := float64(pt.Conns)
		redis.xys = append(redis.xys, plotter.XY{X: x, Y: pt.RedisRPS})
		top = max(top, pt.RedisRPS)
		// The ratios the goals are set in, under each point; the
		// baseline's after a bar.
		label := fmt.Sprintf("%d\nGET / ÷ healthz %.2f\nGET / ÷ redis %.2f", pt.Conns, pt.RatioHealthz, pt.Ratio)
		if a.Baseline != nil && i < len(a.Baseline.Points) {
			b := a.Baseline.Points[i]
			label = fmt.Sprintf("%d\nGET / ÷ healthz %.2f | %.2f\nGET / ÷ redis %.2f | %.2f", pt.Conns, pt.RatioHealthz, b.RatioHealthz, pt.Ratio, b.Ratio)
		}
		if a.App.FrontDoor != "" {
			label += fmt.Sprintf("\nfront door ÷ direct %.2f", pt.RatioFrontDoor)
		}
		ticks = append(ticks, plot.Tick{Value: x, Label: label})
	}
	lines = append(lines, redis)
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	if a.Baseline != nil {
		p.X.Label.Text = fmt.Sprintf("concurrent connections (log scale); ratios: %s | %s", appName(a, a.App), appName(a, a.Baseline))
	}
	p.Y.Min = 0
	// Headroom above the highest point, where the legend sits clear of the
	// lines.
	p.Y.Max = top * (1.15 + 0.1*float64(len(lines)))
	var vs []any
	for _, l := range lines {
		vs = append(vs, l.label, l.xys)
	}
	if err := plotutil.AddLinePoints(p, vs...); err != nil {
		return err
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(6)
	p.BackgroundColor = color.White
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}
