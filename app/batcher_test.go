package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// fakeIncr is a Redis that answers INCRBY from memory, or fails with err.
type fakeIncr struct {
	mu      sync.Mutex
	n       int64
	batches []int64
	err     error
	// When gate is set, each INCRBY says so on entered, then waits for a
	// receive on gate.
	gate, entered chan struct{}
}

func (f *fakeIncr) IncrBy(_ context.Context, _ string, k int64) *redis.IntCmd {
	if f.gate != nil {
		f.entered <- struct{}{}
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return redis.NewIntResult(0, f.err)
	}
	f.n += k
	f.batches = append(f.batches, k)
	return redis.NewIntResult(f.n, nil)
}

// A handler of a connection fasthttp still serves after a shutdown that ran
// out of time may ask for a number once the worker has gone: it must get an
// error, not wait for ever.
func TestIncrAfterCloseFailsAtOnce(t *testing.T) {
	b := newBatcher(&fakeIncr{}, counterKey)
	b.Close()
	done := make(chan error, 1)
	go func() {
		_, err := b.Incr()
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errStopped) {
			t.Errorf("Incr after Close: %v, want %v", err, errStopped)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Incr after Close still waits after 5s")
	}
}

// Visits that wait while an INCRBY is out go together in the next one, and
// each gets its own number of the range that INCRBY returned.
func TestBatcherGivesEachVisitOfABatchItsOwnNumber(t *testing.T) {
	f := &fakeIncr{gate: make(chan struct{}), entered: make(chan struct{})}
	b := newBatcher(f, counterKey)
	defer b.Close()

	got := make(chan int64, 11)
	incr := func() {
		n, err := b.Incr()
		if err != nil {
			t.Error(err)
		}
		got <- n
	}
	go incr()
	<-f.entered // the first INCRBY is out, held at the gate
	for range 10 {
		go incr()
	}
	for len(b.queue) != 10 {
		time.Sleep(time.Millisecond)
	}
	f.gate <- struct{}{} // the first INCRBY answers
	<-f.entered          // the second, carrying the ten that waited
	f.gate <- struct{}{}
	seen := map[int64]bool{}
	for range 11 {
		n := <-got
		if n < 1 || n > 11 || seen[n] {
			t.Fatalf("number %d: want each of 1..11 once (seen %v)", n, seen)
		}
		seen[n] = true
	}
	if fmt.Sprint(f.batches) != "[1 10]" {
		t.Errorf("INCRBY amounts %v, want [1 10]", f.batches)
	}
}

func TestMayHaveCounted(t *testing.T) {
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	readErr := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"not sent/queue full", errOverloaded, false},
		{"not sent/shutting down", errStopped, false},
		{"not sent/no connection free", redis.ErrPoolTimeout, false},
		{"not sent/client closed", redis.ErrClosed, false},
		{"not sent/dial refused", dialErr, false},
		{"refused/error reply", redisReply("ERR value is not an integer or out of range"), false},
		{"unknown/read timeout", readErr, true},
		{"unknown/deadline", os.ErrDeadlineExceeded, true},
		{"unknown/wrapped read timeout", fmt.Errorf("incr: %w", readErr), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mayHaveCounted(tt.err); got != tt.want {
				t.Errorf("mayHaveCounted(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// redisReply is an error reply as go-redis returns one.
type redisReply string

func (e redisReply) Error() string { return string(e) }
func (redisReply) RedisError()     {}
