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
		fmt.Fprintf(w, "\nApp (GET /, %s per point) vs redis-benchmark -t incr on the same Redis, app %s\n", a.Duration, a.AppRevision)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "conns\tapp req/s\tapp p50 ms\tapp p99 ms\tredis INCR/s\tredis p50 ms\tredis p99 ms\tapp/redis\t")
		for _, p := range a.Points {
			fmt.Fprintf(tw, "%d\t%.0f\t%.2f\t%.2f\t%.0f\t%.3f\t%.3f\t%.2f\t\n",
				p.Conns, p.AppRPS, p.AppP50MS, p.AppP99MS, p.RedisRPS, p.RedisP50MS, p.RedisP99MS, p.Ratio)
		}
		tw.Flush()
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
	p.Title.Text = fmt.Sprintf("GET / vs redis-benchmark INCR, %d cores, %s", rep.Cores, rep.Date[:10])
	p.X.Label.Text = "concurrent connections"
	p.Y.Label.Text = "requests per second"
	app, redis := make(plotter.XYs, 0), make(plotter.XYs, 0)
	for _, pt := range rep.App.Points {
		app = append(app, plotter.XY{X: float64(pt.Conns), Y: pt.AppRPS})
		redis = append(redis, plotter.XY{X: float64(pt.Conns), Y: pt.RedisRPS})
	}
	p.X.Scale = plot.LogScale{}
	var ticks []plot.Tick
	for _, pt := range rep.App.Points {
		ticks = append(ticks, plot.Tick{Value: float64(pt.Conns), Label: fmt.Sprint(pt.Conns)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Min = 0
	if err := plotutil.AddLinePoints(p, "app (wrk)", app, "redis-benchmark -t incr", redis); err != nil {
		return err
	}
	p.Legend.Top = true
	p.BackgroundColor = color.White
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}
