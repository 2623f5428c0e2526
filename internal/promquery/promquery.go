// Package promquery reads from Prometheus what a canary's judge needs: the
// exact number of GET / answers, and of 5xx ones, and the latency
// histogram's buckets, that a set of allocations served since a start time,
// the canary's allocations summed apart from the stable ones.
//
// Exact means from the raw samples, not from increase() or rate(), which
// extrapolate to the window's edges and answer fractions: each series'
// samples are read as they were scraped, from the last one at or before
// the start, and their rises are summed, a fall being a restarted instance
// whose counter began again from 0.
package promquery

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/kodekloud/counter/internal/canary"
)

// The app's series (app/handler.go) and the labels the stack's Prometheus
// gives every series it scrapes through Consul.
const (
	RequestsMetric = "counter_http_requests_total"
	BucketsMetric  = "counter_http_request_duration_seconds_bucket"
	AllocLabel     = "alloc" // the Nomad allocation's ID
	// canaryLabel is "true" while an allocation is a canary not yet
	// promoted: of a series' labels, the one that changes in its life.
	canaryLabel = "canary"
	route       = "/"
)

// Querier is the one call of Prometheus's HTTP API that Source makes;
// v1.API has it.
type Querier interface {
	Query(ctx context.Context, query string, ts time.Time, opts ...v1.Option) (model.Value, v1.Warnings, v1.Infos, error)
}

// Source reads counts from one Prometheus.
type Source struct {
	API  Querier
	Addr string // for messages: which Prometheus answered
	// Lookback is how far before the start a series' last sample is
	// looked for, its count then being the baseline; 0 means 2 minutes,
	// many scrape intervals.
	Lookback time.Duration
	// MaxAge is how old a canary allocation's newest sample may be at the
	// end of the window; an older one means Prometheus no longer scrapes
	// it, and counts that stopped would judge a canary on what it did
	// before. 0 means 30 s.
	MaxAge time.Duration
}

// New returns a Source for the Prometheus at addr (http://host:port).
func New(addr string) (*Source, error) {
	if addr == "" {
		return nil, errors.New("no Prometheus address: set PROMETHEUS_ADDR (bin/stack env prints it) or -prometheus-addr")
	}
	c, err := api.NewClient(api.Config{Address: addr})
	if err != nil {
		return nil, fmt.Errorf("Prometheus at %s: %w", addr, err)
	}
	return &Source{API: v1.NewAPI(c), Addr: addr}, nil
}

// Allocs names the allocations of each side by their Nomad IDs.
type Allocs struct {
	Canary, Stable []string
}

// Reading is one read of the window: the sums the judge takes, and each
// allocation's counts behind them.
type Reading struct {
	Window   canary.Window
	PerAlloc map[string]canary.Counts `json:"per_alloc"`
	// Resets counts the restarts seen (a series whose count fell), per
	// allocation.
	Resets map[string]int `json:"resets,omitempty"`
}

// Read returns what each side's allocations served on GET / from start to
// end; with latency, also their GET / latency buckets. Every allocation
// named must have its requests series in Prometheus, and each canary's
// must be fresh at end: else an error, never counts that leave an
// instance out.
func (s *Source) Read(ctx context.Context, allocs Allocs, start, end time.Time, latency bool) (*Reading, error) {
	if !end.After(start) {
		return nil, fmt.Errorf("window from %s to %s: the end must come after the start", start.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	all := slices.Concat(allocs.Canary, allocs.Stable)
	if len(allocs.Canary) == 0 || len(allocs.Stable) == 0 {
		return nil, fmt.Errorf("%d canary and %d stable allocations: the judge compares one side with the other", len(allocs.Canary), len(allocs.Stable))
	}
	reqs, err := s.series(ctx, RequestsMetric, all, start, end)
	if err != nil {
		return nil, err
	}
	r := &Reading{PerAlloc: map[string]canary.Counts{}, Resets: map[string]int{}}
	newest := map[string]time.Time{}
	for _, ss := range oneEach(reqs) {
		id := string(ss.Metric[AllocLabel])
		d, resets, last := delta(ss.Values, start)
		if t := last.Timestamp.Time(); t.After(newest[id]) {
			newest[id] = t
		}
		c := r.PerAlloc[id]
		c.Requests += d
		if strings.HasPrefix(string(ss.Metric["code"]), "5") {
			c.Errors += d
		}
		r.PerAlloc[id] = c
		if resets > 0 {
			r.Resets[id] += resets
		}
	}
	maxAge := s.MaxAge
	if maxAge == 0 {
		maxAge = 30 * time.Second
	}
	for _, id := range all {
		if _, ok := newest[id]; !ok {
			return nil, fmt.Errorf("Prometheus at %s has no %s{route=%q} of allocation %s between %s and %s: it does not scrape that instance (yet), so its counts are unknown",
				s.Addr, RequestsMetric, route, id, start.Format(time.TimeOnly), end.Format(time.TimeOnly))
		}
	}
	for _, id := range allocs.Canary {
		if age := end.Sub(newest[id]); age > maxAge {
			return nil, fmt.Errorf("Prometheus at %s last scraped canary allocation %s %s before %s (more than %s): its counts stopped, so it cannot be judged on them",
				s.Addr, id, age.Round(time.Second), end.Format(time.TimeOnly), maxAge)
		}
	}
	for _, id := range allocs.Canary {
		add(&r.Window.Canary, r.PerAlloc[id])
	}
	for _, id := range allocs.Stable {
		add(&r.Window.Stable, r.PerAlloc[id])
	}
	if latency {
		if r.Window.CanaryLatency, err = s.histogram(ctx, allocs.Canary, start, end); err != nil {
			return nil, err
		}
		if r.Window.StableLatency, err = s.histogram(ctx, allocs.Stable, start, end); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func add(sum *canary.Counts, c canary.Counts) {
	sum.Requests += c.Requests
	sum.Errors += c.Errors
}

// histogram sums the allocations' GET / latency buckets over the window.
func (s *Source) histogram(ctx context.Context, ids []string, start, end time.Time) (canary.Histogram, error) {
	streams, err := s.series(ctx, BucketsMetric, ids, start, end)
	if err != nil {
		return canary.Histogram{}, err
	}
	byBound := map[float64]int64{}
	for _, ss := range oneEach(streams) {
		le, err := strconv.ParseFloat(string(ss.Metric["le"]), 64)
		if err != nil {
			return canary.Histogram{}, fmt.Errorf("%s of allocation %s: bucket bound le=%q: %w", BucketsMetric, ss.Metric[AllocLabel], ss.Metric["le"], err)
		}
		d, _, _ := delta(ss.Values, start)
		byBound[le] += d
	}
	if len(byBound) == 0 {
		return canary.Histogram{}, fmt.Errorf("Prometheus at %s has no %s{route=%q} of allocations %s", s.Addr, BucketsMetric, route, strings.Join(ids, ", "))
	}
	var h canary.Histogram
	for le := range byBound {
		h.Bounds = append(h.Bounds, le)
	}
	sort.Float64s(h.Bounds)
	for _, le := range h.Bounds {
		h.Counts = append(h.Counts, byBound[le])
	}
	return h, nil
}

// series reads the raw samples of metric{route="/"} of the allocations
// from Lookback before start to end: a range selector evaluated at end
// answers the samples as scraped.
func (s *Source) series(ctx context.Context, metric string, ids []string, start, end time.Time) (model.Matrix, error) {
	lookback := s.Lookback
	if lookback == 0 {
		lookback = 2 * time.Minute
	}
	quoted := make([]string, len(ids))
	for i, id := range ids {
		quoted[i] = regexp.QuoteMeta(id)
	}
	span := end.Sub(start) + lookback
	q := fmt.Sprintf(`%s{route=%q,%s=~%q}[%dms]`, metric, route, AllocLabel, strings.Join(quoted, "|"), span.Milliseconds())
	v, _, _, err := s.API.Query(ctx, q, end)
	if err != nil {
		return nil, fmt.Errorf("query Prometheus at %s (%s): %w", s.Addr, q, err)
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("query Prometheus at %s (%s): got a %s, want a range vector", s.Addr, q, v.Type())
	}
	return m, nil
}

// oneEach keeps one series of each counter an allocation has (series whose
// labels differ in canary alone) wherever two of them cover the same time:
// they are one counter scraped twice, as two targets that the
// stack's Consul agents describe apart. That happens in a cluster, whose
// Prometheus asks every agent: an agent that is down keeps, in
// Prometheus, its last answer, with a canary tag Nomad has since taken
// off the promoted allocation, beside the live agents' answer without it.
// Summed, such an allocation would count twice. Of two series that cover
// the same time it keeps the one with more samples. Series that follow one
// another (a label that changed once) are one counter too: joined, so that
// the later one's count is a rise from the earlier's, not all new.
func oneEach(m model.Matrix) model.Matrix {
	byCounter := map[string][]*model.SampleStream{}
	var keys []string
	for _, ss := range m {
		if len(ss.Values) == 0 {
			continue
		}
		counter := ss.Metric.Clone()
		delete(counter, canaryLabel)
		k := counter.String() // its labels, sorted
		if byCounter[k] == nil {
			keys = append(keys, k)
		}
		byCounter[k] = append(byCounter[k], ss)
	}
	var out model.Matrix
	for _, k := range keys {
		group := byCounter[k]
		sort.Slice(group, func(i, j int) bool { return group[i].Values[0].Timestamp.Before(group[j].Values[0].Timestamp) })
		one := &model.SampleStream{Metric: group[0].Metric, Values: slices.Clone(group[0].Values)}
		for _, ss := range group[1:] {
			switch {
			case ss.Values[0].Timestamp.After(lastCount(one.Values)):
				one.Values = append(one.Values, ss.Values...)
			case len(ss.Values) > len(one.Values):
				one = &model.SampleStream{Metric: ss.Metric, Values: slices.Clone(ss.Values)}
			}
		}
		out = append(out, one)
	}
	return out
}

// lastCount is the time of the last sample that is a count, not the
// staleness marker (NaN) Prometheus writes when a target goes away.
func lastCount(values []model.SamplePair) model.Time {
	for i := len(values) - 1; i > 0; i-- {
		if !math.IsNaN(float64(values[i].Value)) {
			return values[i].Timestamp
		}
	}
	return values[0].Timestamp
}

// delta is how much a counter rose from start to the last sample: from
// its last count (not a staleness marker) at or before start (0 when the series began after start:
// it did not exist at the earlier scrape, so its count is all new), adding
// each rise and, where the count fell (the instance restarted and counted
// again from 0), the count after the fall. It returns the number of falls
// and the last sample. A restart that climbs back above the old count
// between two scrapes is not seen: no reader of Prometheus's counters can
// see it.
func delta(values []model.SamplePair, start time.Time) (int64, int, model.SamplePair) {
	if len(values) == 0 {
		return 0, 0, model.SamplePair{}
	}
	from := model.TimeFromUnixNano(start.UnixNano())
	i := 0
	base := 0.0
	for i < len(values) && !values[i].Timestamp.After(from) {
		if v := float64(values[i].Value); !math.IsNaN(v) {
			base = v
		}
		i++
	}
	var sum float64
	resets := 0
	prev := base
	for _, v := range values[i:] {
		x := float64(v.Value)
		if math.IsNaN(x) {
			continue
		}
		if x < prev {
			sum += x
			resets++
		} else {
			sum += x - prev
		}
		prev = x
	}
	return int64(math.Round(sum)), resets, values[len(values)-1]
}
