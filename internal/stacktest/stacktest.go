// Package stacktest gives an integration test package one private local
// stack (Consul, Nomad, Redis, registry) on free ports, started on first use
// and stopped when the package's tests end. Tests that share it keep apart
// by the job names and KV prefixes that Name gives them.
package stacktest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testenv"
	"github.com/kodekloud/counter/internal/testimage"
)

var shared struct {
	once    sync.Once
	stack   *localstack.Stack
	bin     localstack.Binaries
	release func()
	dir     string
	err     error
}

// Main runs the package's tests, stops the shared stack and exits. Call it
// from TestMain.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run runs the package's tests, stops the shared stack and returns the exit
// code, for a TestMain that exits by other means (testscript.Main).
func Run(m interface{ Run() int }) int {
	code := m.Run()
	if s := shared.stack; s != nil {
		if err := s.Stop(context.Background()); err != nil {
			fmt.Fprintf(os.Stderr, "stacktest: stop stack: %v\n", err)
			code = 1
		}
	}
	if shared.release != nil {
		shared.release()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	return code
}

// Start returns the package's stack, starting it on first use. A test that
// cannot have it fails in CI and skips elsewhere. When the test fails, the
// agents' last log lines are added to its output.
func Start(tb testing.TB) *localstack.Stack {
	tb.Helper()
	testimage.RequireDocker(tb)
	shared.once.Do(func() { shared.stack, shared.err = start(tb) })
	if shared.err != nil {
		testenv.Unavailable(tb, "local stack: %v", shared.err)
	}
	s := shared.stack
	tb.Cleanup(func() {
		if !tb.Failed() {
			return
		}
		for _, name := range []string{"nomad", "consul"} {
			tb.Logf("last lines of %s.log:\n%s", name, s.LogTail(name, 40))
		}
	})
	return s
}

// Binaries returns the programs the package's stack runs, for a test that
// starts a stack of its own.
func Binaries(tb testing.TB) localstack.Binaries {
	tb.Helper()
	Start(tb)
	return shared.bin
}

func start(tb testing.TB) (*localstack.Stack, error) {
	tb.Helper()
	// A cold build of nomad and consul takes minutes: show its progress.
	bin, err := localstack.FindBinaries(context.Background(), testimage.RepoRoot(tb), os.Stderr)
	if err != nil {
		return nil, err
	}
	lo, hi, release, err := localstack.ReserveDynamicRange()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "counter-stack-")
	if err != nil {
		release()
		return nil, err
	}
	shared.dir, shared.release, shared.bin = dir, release, bin
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return localstack.Start(ctx, localstack.Config{
		Dir:   dir,
		Bin:   bin,
		Ports: localstack.Ports{MinDynamic: lo, MaxDynamic: hi},
	})
}

// Name returns a short name unique to the test, usable as a Nomad job name
// and a Consul KV prefix, so tests sharing a stack never share state.
func Name(tb testing.TB, prefix string) string {
	tb.Helper()
	sum := sha256.Sum256(fmt.Appendf(nil, "%s %d", tb.Name(), time.Now().UnixNano()))
	return prefix + "-" + hex.EncodeToString(sum[:4])
}
