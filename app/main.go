// Command app is the counter web service: GET / increments the Redis key
// visitorCount and answers with the value this request's increment returned.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "app: %v\n", err)
		time.Sleep(failedExitDelay(os.Getenv))
		os.Exit(1)
	}
}

// failedExitDelay is how long the app waits, after it has said why it
// failed, before it exits. Under Nomad it waits: Nomad's docker driver starts
// the process that copies a container's output to the task's log only after
// the container has started, and stops it as soon as the container exits, so
// the complaint of an app that fails at once is often lost (on a busy
// machine, every attempt's), and with it the deployer's account of why a
// release failed (hashicorp/nomad#6931). Run by hand, it exits at once.
func failedExitDelay(getenv func(string) string) time.Duration {
	if getenv("NOMAD_ALLOC_ID") == "" {
		return 0
	}
	return 3 * time.Second
}
