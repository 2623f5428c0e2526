package main

import (
	"errors"
	"testing"
	"time"
)

type fixedIncr struct{}

func (fixedIncr) IncrBy(string, int64) (int64, error) { return 1, nil }
func (fixedIncr) Close()                              {}

// A handler of a connection fasthttp still serves after a shutdown that ran
// out of time may ask for a number once the worker has gone: it must get an
// error, not wait for ever.
func TestIncrAfterCloseFailsAtOnce(t *testing.T) {
	b := newBatcher(fixedIncr{}, counterKey)
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
