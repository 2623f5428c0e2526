package stacktest

import (
	"context"
	"time"

	"testing"

	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/envtest"
)

// StartOwn starts a single-agent stack of the test's own, beside the
// package's, and stops it when the test ends: for a test that changes what
// every other test relies on, such as Consul's trust of Nomad's
// identities. It is the stack `make up` starts (ACLs on, bootstrapped,
// identities trusted), without the deployer's tokens.
func StartOwn(tb testing.TB) *localstack.Stack {
	tb.Helper()
	envtest.NeedsServers(tb, "a stack of its own (Nomad, Consul, Redis, registry, Docker)")
	bin := Binaries(tb)
	lo, hi, release, err := localstack.ReserveDynamicRange()
	if err != nil {
		envtest.Unavailable(tb, "ports for a stack: %v", err)
	}
	dir := tb.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, localstack.Config{
		Dir: dir, Bin: bin, Ports: localstack.Ports{MinDynamic: lo, MaxDynamic: hi},
	})
	if err != nil {
		release()
		envtest.Unavailable(tb, "a stack of the test's own: %v", err)
	}
	// Its secrets are kept as the package stacks' are: Secret, NoSecret
	// and Redact know them, and its logs are checked once it stops.
	p := &pkgStack{stack: s, bin: bin}
	p.addSecret("own stack's Nomad management token", s.NomadToken)
	p.addSecret("own stack's Consul management token", s.ConsulToken)
	p.addSecret("own stack's Consul DNS token", s.DNSToken())
	ownsMu.Lock()
	owns = append(owns, p)
	ownsMu.Unlock()
	// Registered after TempDir's, so it runs before the folder goes.
	tb.Cleanup(func() {
		if tb.Failed() {
			for _, name := range []string{"nomad", "consul"} {
				tb.Logf("last lines of its own stack's %s.log:\n%s", name, Redact(s.LogTail(name, 12)))
			}
		}
		if err := s.Stop(context.Background()); err != nil {
			tb.Errorf("stop the test's own stack: %v", err)
		}
		if err := p.checkLogs(); err != nil {
			tb.Error(err)
		}
		release()
	})
	return s
}
