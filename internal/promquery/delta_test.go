package promquery

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// staleMarker is the NaN Prometheus writes when a series goes away.
const staleMarker = 0x7ff0000000000002

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// samples are (seconds after t0, value) pairs.
func samples(pairs ...float64) []model.SamplePair {
	var out []model.SamplePair
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, model.SamplePair{
			Timestamp: model.TimeFromUnixNano(t0.Add(time.Duration(pairs[i] * float64(time.Second))).UnixNano()),
			Value:     model.SampleValue(pairs[i+1]),
		})
	}
	return out
}

func TestDeltaCountsExactlyFromTheStart(t *testing.T) {
	start := t0.Add(10 * time.Second)
	tests := []struct {
		name   string
		values []model.SamplePair
		want   int64
		resets int
	}{
		{"counts/the rise since the last sample at the start", samples(0, 100, 5, 110, 10, 120, 15, 150, 20, 151), 31, 0},
		{"counts/the rise since the last sample before the start", samples(0, 100, 9, 110, 12, 130), 20, 0},
		{"counts/nothing when nothing came", samples(0, 7, 10, 7, 20, 7), 0, 0},
		{"counts/nothing without a sample after the start", samples(0, 7, 10, 9), 0, 0},
		// The process restarted between 15 s and 20 s: it served 150-120
		// before, and 4 since its counter began again.
		{"restart/adds what the new process counted", samples(5, 100, 10, 120, 15, 150, 20, 4, 25, 9), 39, 1},
		{"restart/twice", samples(10, 50, 15, 60, 20, 3, 25, 8, 30, 2), 10 + 8 + 2, 2},
		{"restart/right after the start", samples(10, 50, 15, 1), 1, 1},
		// A series born after the start (the first 500 an instance
		// answers creates its code="500" series) counts from 0.
		{"new series/counts from 0", samples(12, 3, 17, 5), 5, 0},
		{"skips/a stale marker", append(samples(10, 5, 15, 8), model.SamplePair{Timestamp: model.TimeFromUnixNano(t0.Add(16 * time.Second).UnixNano()), Value: model.SampleValue(math.Float64frombits(staleMarker))}), 3, 0},
		// Two series of one counter joined (oneEach): the earlier one's
		// marker may come before the start, and is no base to count from.
		{"skips/a stale marker before the start", []model.SamplePair{samples(5, 100)[0], {Timestamp: model.TimeFromUnixNano(t0.Add(9 * time.Second).UnixNano()), Value: model.SampleValue(math.Float64frombits(staleMarker))}, samples(12, 110)[0]}, 10, 0},
		{"none/no samples", nil, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, resets, _ := delta(tt.values, start)
			if got != tt.want || resets != tt.resets {
				t.Errorf("delta = %d with %d resets, want %d with %d", got, resets, tt.want, tt.resets)
			}
		})
	}
}

// fake answers /api/v1/query with the matrix that series(query) gives.
func fake(t *testing.T, series func(query string) []map[string]any) *Source {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "success",
			"data": map[string]any{"resultType": "matrix", "result": series(r.Form.Get("query"))}})
	}))
	t.Cleanup(srv.Close)
	s, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func stream(alloc, code string, pairs ...float64) map[string]any {
	var values [][]any
	for i := 0; i < len(pairs); i += 2 {
		ts := float64(t0.Add(time.Duration(pairs[i]*float64(time.Second))).UnixMilli()) / 1000
		values = append(values, []any{ts, fmt.Sprint(pairs[i+1])})
	}
	return map[string]any{"metric": map[string]string{"__name__": RequestsMetric, "route": "/", "code": code, AllocLabel: alloc}, "values": values}
}

// labelled is s with label set to value.
func labelled(s map[string]any, label, value string) map[string]any {
	m := map[string]string{}
	for k, v := range s["metric"].(map[string]string) {
		m[k] = v
	}
	m[label] = value
	return map[string]any{"metric": m, "values": s["values"]}
}

// TestReadRefusesWhatItCannotCount checks the cases a real Prometheus
// shows only by chance: each is an error, which the judge takes as
// inconclusive, never counts that leave an instance out.
func TestReadRefusesWhatItCannotCount(t *testing.T) {
	start, end := t0.Add(10*time.Second), t0.Add(60*time.Second)
	both := Allocs{Canary: []string{"c1"}, Stable: []string{"s1"}}
	tests := []struct {
		name   string
		series []map[string]any
		allocs Allocs
		want   string
	}{
		{"refuses/an allocation without its series", []map[string]any{stream("s1", "200", 0, 1, 59, 9)}, both,
			"no counter_http_requests_total{route=\"/\"} of allocation c1"},
		{"refuses/a canary no longer scraped", []map[string]any{stream("c1", "200", 0, 1, 20, 9), stream("s1", "200", 0, 1, 59, 9)}, both,
			"last scraped canary allocation c1 40s before"},
		{"refuses/no stable allocation", nil, Allocs{Canary: []string{"c1"}},
			"1 canary and 0 stable allocations"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fake(t, func(string) []map[string]any { return tt.series })
			r, err := s.Read(context.Background(), tt.allocs, start, end, false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Read = %+v, %v; want an error with %q", r, err, tt.want)
			}
		})
	}
	t.Run("sums/each side's allocations, 5xx apart", func(t *testing.T) {
		s := fake(t, func(q string) []map[string]any {
			if !strings.Contains(q, `alloc=~"c1|c2|s1"`) {
				t.Errorf("query %s does not select the three allocations", q)
			}
			return []map[string]any{
				stream("c1", "200", 0, 5, 30, 25, 58, 45), stream("c1", "500", 30, 2, 58, 4),
				stream("c2", "200", 5, 0, 50, 10), stream("c2", "503", 5, 0, 50, 1),
				stream("s1", "200", 0, 100, 59, 200), stream("s1", "503", 0, 3, 59, 3),
			}
		})
		r, err := s.Read(context.Background(), Allocs{Canary: []string{"c1", "c2"}, Stable: []string{"s1"}}, start, end, false)
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprintf("canary %+v stable %+v", r.Window.Canary, r.Window.Stable)
		if want := "canary {Requests:55 Errors:5} stable {Requests:100 Errors:0}"; got != want {
			t.Errorf("Read = %s, want %s", got, want)
		}
	})
	// One counter under two label sets: the same target scraped twice (a
	// dead Consul agent's stale answer kept the canary tag), or a label
	// that changed once.
	once := []struct {
		name   string
		series []map[string]any
		want   string
	}{
		{"counts/a counter scraped twice at once, once",
			[]map[string]any{stream("c1", "200", 0, 0, 59, 30), labelled(stream("s1", "200", 0, 100, 30, 150, 59, 200), "canary", "true"), labelled(stream("s1", "200", 0.5, 100, 30.5, 150, 58.5, 199), "canary", "false")},
			"canary {Requests:30 Errors:0} stable {Requests:100 Errors:0}"},
		{"counts/a counter whose label changed, across the change",
			[]map[string]any{stream("c1", "200", 0, 0, 59, 30), labelled(stream("s1", "200", 0, 100, 30, 150), "canary", "true"), labelled(stream("s1", "200", 31, 151, 59, 200), "canary", "false")},
			"canary {Requests:30 Errors:0} stable {Requests:100 Errors:0}"},
		{"counts/a counter whose label changed, its staleness marker after the new series began",
			[]map[string]any{stream("c1", "200", 0, 0, 59, 30), labelled(stream("s1", "200", 0, 100, 30, 150, 31.5, math.NaN()), "canary", "true"), labelled(stream("s1", "200", 31, 151, 59, 200), "canary", "false")},
			"canary {Requests:30 Errors:0} stable {Requests:100 Errors:0}"},
	}
	for _, tt := range once {
		t.Run(tt.name, func(t *testing.T) {
			s := fake(t, func(string) []map[string]any { return tt.series })
			r, err := s.Read(context.Background(), both, start, end, false)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("canary %+v stable %+v", r.Window.Canary, r.Window.Stable); got != tt.want {
				t.Errorf("Read = %s, want %s", got, tt.want)
			}
		})
	}
	t.Run("refuses/a Prometheus that does not answer", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := "http://" + l.Addr().String()
		l.Close()
		s, err := New(addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Read(context.Background(), both, start, end, false); err == nil || !strings.Contains(err.Error(), "query Prometheus at "+addr) {
			t.Fatalf("Read = %v; want an error naming Prometheus at %s", err, addr)
		}
	})
}
