package stacktest

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"testing"

	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/envtest"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
)

// Option changes the configuration of a stack StartOwn starts.
type Option func(*localstack.Config)

// TrackedVersions sets the Nomad server's job_tracked_versions to n, for a
// test of what happens past Nomad's limits without making the stack's
// default number of versions first.
func TrackedVersions(n int) Option {
	return func(c *localstack.Config) { c.JobTrackedVersions = n }
}

// Cluster makes the stack a cluster (localstack.Config.Cluster): three
// servers and two client nodes, each on a loopback address of its own.
func Cluster() Option {
	return func(c *localstack.Config) { c.Cluster = true }
}

// StartOwn starts a single-agent stack of the test's own, beside the
// package's, and stops it when the test ends: for a test that changes what
// every other test relies on, such as Consul's trust of Nomad's
// identities, or that needs a server setting of its own (opts). It is the
// stack `make up` starts (ACLs on, bootstrapped, identities trusted),
// without the deployer's tokens.
func StartOwn(tb testing.TB, opts ...Option) *localstack.Stack {
	tb.Helper()
	return startOwn(tb, "", "", opts...)
}

// StartOwnWithTokens is StartOwn with the management tokens given, as an
// operator bootstraps a fresh cluster with the tokens kept beside a backup
// of the old one, so that they hold before its restore and after.
func StartOwnWithTokens(tb testing.TB, nomadToken, consulToken string, opts ...Option) *localstack.Stack {
	tb.Helper()
	return startOwn(tb, nomadToken, consulToken, opts...)
}

// StartOwnFrontDoor is StartOwn with a front door for each environment
// file in envDir that has a url (localstack.Config.Environments), and the
// deployer's and the operator's tokens, as make up makes them: for a test
// of what users see through an environment's URL. RestartOwn stops and
// starts it again; opts change its configuration (Cluster).
func StartOwnFrontDoor(tb testing.TB, envDir string, opts ...Option) *localstack.Stack {
	tb.Helper()
	s := startOwn(tb, "", "", append(opts, func(c *localstack.Config) { c.Environments = envDir })...)
	p := of(tb, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nomadRules, consulRules, err := readPolicies(imagetest.RepoRoot(tb))
	if err == nil {
		err = s.DeployerTokens(ctx, nomadRules, consulRules)
	}
	if err != nil {
		tb.Fatalf("the deployer's tokens on the test's own stack: %v", err)
	}
	operator, err := operatorToken(ctx, s, imagetest.RepoRoot(tb))
	if err != nil {
		tb.Fatalf("the operator's token on the test's own stack: %v", err)
	}
	p.addSecret("own stack's deployer Nomad token", s.DeployerNomadToken)
	p.addSecret("own stack's deployer Consul token", s.DeployerConsulToken)
	p.addSecret("own stack's operator Nomad token", operator)
	p.mu.Lock()
	p.operator = operator
	p.mu.Unlock()
	return s
}

func startOwn(tb testing.TB, nomadToken, consulToken string, opts ...Option) *localstack.Stack {
	tb.Helper()
	envtest.NeedsServers(tb, "a stack of its own (Nomad, Consul, Redis, registry, Docker)")
	bin := Binaries(tb)
	lo, hi, release, err := localstack.ReserveDynamicRange()
	if err != nil {
		envtest.Unavailable(tb, "ports for a stack: %v", err)
	}
	dir := tb.TempDir()
	if nomadToken != "" {
		// The stack takes the tokens it finds in its folder's secrets.
		nf, cf := localstack.TokenFiles(dir)
		if err := os.MkdirAll(filepath.Dir(nf), 0o700); err != nil {
			tb.Fatal(err)
		}
		for file, token := range map[string]string{nf: nomadToken, cf: consulToken} {
			if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
				tb.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := localstack.Config{
		Dir: dir, Bin: bin, Ports: localstack.Ports{MinDynamic: lo, MaxDynamic: hi},
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		release()
		envtest.Unavailable(tb, "a stack of the test's own: %v", err)
	}
	// Its secrets are kept as the package stacks' are: Secret, NoSecret
	// and Redact know them, and its logs are checked once it stops.
	p := &pkgStack{stack: s, bin: bin, cfg: cfg}
	p.addSecret("own stack's Nomad management token", s.NomadToken)
	p.addSecret("own stack's Consul management token", s.ConsulToken)
	p.addSecret("own stack's Consul DNS token", s.DNSToken())
	p.addSecret("own stack's Prometheus Consul token", s.PrometheusToken())
	ownsMu.Lock()
	owns = append(owns, p)
	ownsMu.Unlock()
	// Registered after TempDir's, so it runs before the folder goes.
	tb.Cleanup(func() {
		// RestartOwn may have put another stack in its place.
		p.mu.Lock()
		s := p.stack
		p.mu.Unlock()
		if tb.Failed() {
			for _, name := range []string{"nomad", "consul", "haproxy", "prometheus"} {
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

// RestartOwn is make down and make up on a stack StartOwnFrontDoor
// started: it stops every process of s, starts them again on the same
// folder and ports with their data, and waits until Nomad's allocations run
// again and pass their checks. It returns the stack that runs now, which
// the stacktest helpers know in s's place.
func RestartOwn(tb testing.TB, s *localstack.Stack) *localstack.Stack {
	tb.Helper()
	p := of(tb, s)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		tb.Fatalf("stop the test's own stack: %v", err)
	}
	again := p.resume(ctx, tb, s)
	if err := again.WaitWorkloads(ctx, 2*time.Minute); err != nil {
		tb.Fatal(err)
	}
	return again
}

// ResumeOwn is make up on a stack StartOwnFrontDoor started, some of whose
// processes died: localstack's resume path starts the dead ones again and
// keeps the others. It returns the stack that runs now, which the
// stacktest helpers know in s's place.
func ResumeOwn(tb testing.TB, s *localstack.Stack) *localstack.Stack {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return of(tb, s).resume(ctx, tb, s)
}

// resume starts p's stack again on s's folder and ports, as make up does,
// and puts the stack that runs now in s's place.
func (p *pkgStack) resume(ctx context.Context, tb testing.TB, s *localstack.Stack) *localstack.Stack {
	tb.Helper()
	cfg := p.cfg
	cfg.Ports, cfg.Resume = s.Ports, true
	again, err := localstack.Start(ctx, cfg)
	if err != nil {
		tb.Fatalf("start the test's own stack again: %v", err)
	}
	p.mu.Lock()
	p.stack = again
	p.mu.Unlock()
	return again
}
