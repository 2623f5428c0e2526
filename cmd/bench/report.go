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
			"median of %d interleaved runs of %s per point, app %s\n", a.Rounds, a.Duration, a.AppRevision)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "conns\tGET / req/s\tp50 ms\tp99 ms\t/healthz req/s\tp50 ms\tp99 ms\tredis INCR/s\tp50 ms\tp99 ms\t/ ÷ healthz\t/ ÷ redis\t")
		for _, p := range a.Points {
			fmt.Fprintf(tw, "%d\t%.0f\t%.2f\t%.2f\t%.0f\t%.2f\t%.2f\t%.0f\t%.3f\t%.3f\t%.2f\t%.2f\t\n",
				p.Conns, p.AppRPS, p.AppP50MS, p.AppP99MS, p.HealthzRPS, p.HealthzP50MS, p.HealthzP99MS,
				p.RedisRPS, p.RedisP50MS, p.RedisP99MS, p.RatioHealthz, p.Ratio)
		}
		tw.Flush()
		fmt.Fprintln(w, "runs (GET / ÷ healthz, GET / ÷ redis in each round):")
		for _, p := range a.Points {
			fmt.Fprintf(w, "  c=%d:", p.Conns)
			for _, r := range p.Runs {
				fmt.Fprintf(w, " %.0f/%.0f/%.0f (%.2f, %.2f)", r.AppRPS, r.HealthzRPS, r.RedisRPS, r.AppRPS/r.HealthzRPS, r.AppRPS/r.RedisRPS)
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "at half of peak (%.0f req/s, open loop): p50 %.2f ms, p99 %.2f ms\n", a.HalfRate, a.HalfP50MS, a.HalfP99MS)
		fmt.Fprintf(w, "app peak RSS: %.1f MiB\n", a.PeakRSSMiB)
		fmt.Fprintf(w, "counter check (every answer read): %s\n", a.Exact)
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

func throughputChart(rep *report, path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("GET / vs GET /healthz and redis-benchmark INCR, %d cores, %s", rep.Cores, rep.Date[:10])
	p.X.Label.Text = "concurrent connections (log scale)"
	p.Y.Label.Text = "requests per second (median)"
	var app, healthz, redis plotter.XYs
	var ticks []plot.Tick
	top := 0.0
	for _, pt := range rep.App.Points {
		x := float64(pt.Conns)
		app = append(app, plotter.XY{X: x, Y: pt.AppRPS})
		healthz = append(healthz, plotter.XY{X: x, Y: pt.HealthzRPS})
		redis = append(redis, plotter.XY{X: x, Y: pt.RedisRPS})
		// The ratios the goals are set in, under each point.
		ticks = append(ticks, plot.Tick{Value: x, Label: fmt.Sprintf("%d\nGET / ÷ healthz %.2f\nGET / ÷ redis %.2f", pt.Conns, pt.RatioHealthz, pt.Ratio)})
		top = max(top, pt.AppRPS, pt.HealthzRPS, pt.RedisRPS)
	}
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Min = 0
	// Headroom above the highest point, where the legend sits clear of the
	// lines.
	p.Y.Max = top * 1.45
	if err := plotutil.AddLinePoints(p,
		"app GET /healthz (HTTP ceiling)", healthz,
		"app GET / (counts in Redis)", app,
		"redis-benchmark -t incr", redis); err != nil {
		return err
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(6)
	p.BackgroundColor = color.White
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}
