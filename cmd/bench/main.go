// Command bench measures the project against its limits and its nearest
// alternatives in the same run: the app against redis-benchmark on the same
// Redis, the deployer against the bare nomad CLI on the same local stack.
// It prints a table and writes it, as text and JSON, with a throughput chart,
// under bench-results/. `make bench` runs it.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		os.Stderr.WriteString("bench: " + err.Error() + "\n")
		os.Exit(1)
	}
}
