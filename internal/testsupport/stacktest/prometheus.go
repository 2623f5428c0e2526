package stacktest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/kodekloud/counter/internal/localstack"
)

// Prometheus returns a client of stack s's Prometheus (its HTTP API, as
// the deployer reaches it through PROMETHEUS_ADDR). A stack without one
// fails the test.
func Prometheus(tb testing.TB, s *localstack.Stack) promv1.API {
	tb.Helper()
	if s.PrometheusAddr == "" {
		tb.Fatalf("the stack in %s runs no Prometheus", s.Dir)
	}
	c, err := api.NewClient(api.Config{Address: s.PrometheusAddr})
	if err != nil {
		tb.Fatal(err)
	}
	return promv1.NewAPI(c)
}

// Query runs the PromQL instant query q on stack s's Prometheus now and
// returns its samples; an error of the query fails the test.
func Query(tb testing.TB, s *localstack.Stack, q string) model.Vector {
	tb.Helper()
	v, err := query(Prometheus(tb, s), q)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func query(p promv1.API, q string) (model.Vector, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, _, _, err := p.Query(ctx, q, time.Now())
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", q, err)
	}
	v, ok := res.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query %s: a %s, want a vector", q, res.Type())
	}
	return v, nil
}

// WaitQuery runs the instant query q every half second until ok accepts
// its samples, and fails the test after within, showing the last answer.
// It returns the samples ok accepted.
func WaitQuery(tb testing.TB, s *localstack.Stack, within time.Duration, q string, ok func(model.Vector) bool) model.Vector {
	tb.Helper()
	p := Prometheus(tb, s)
	var last string
	for deadline := time.Now().Add(within); ; time.Sleep(500 * time.Millisecond) {
		v, err := query(p, q)
		if err == nil && ok(v) {
			return v
		}
		if err != nil {
			last = err.Error()
		} else {
			last = v.String()
		}
		if time.Now().After(deadline) {
			tb.Fatalf("Prometheus at %s: %s not as wanted within %s; last answer:\n%s", s.PrometheusAddr, q, within, last)
		}
	}
}
