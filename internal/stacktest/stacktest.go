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
	"path/filepath"
	"sync"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/access"
	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testenv"
	"github.com/kodekloud/counter/internal/testimage"
)

// pkgStack is a stack a test package starts once and shares.
type pkgStack struct {
	once    sync.Once
	stack   *localstack.Stack
	bin     localstack.Binaries
	release func()
	dir     string
	err     error
}

// shared is the package's single-agent stack; cluster its cluster stack.
// A test binary's tests share them, so they live as long as it does.
var shared, cluster pkgStack

// stop stops the stack if it was started and frees its ports and folder.
func (p *pkgStack) stop() error {
	var err error
	if p.stack != nil {
		err = p.stack.Stop(context.Background())
	}
	if p.release != nil {
		p.release()
	}
	if p.dir != "" {
		_ = os.RemoveAll(p.dir)
	}
	return err
}

// Main runs the package's tests, stops the shared stack and exits. Call it
// from TestMain.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run runs the package's tests, stops the shared stack and returns the exit
// code, for a TestMain that exits by other means (testscript.Main).
func Run(m interface{ Run() int }) int {
	code := m.Run()
	for _, p := range []*pkgStack{&shared, &cluster} {
		if err := p.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stacktest: stop stack: %v\n", err)
			code = 1
		}
	}
	return code
}

// Start returns the package's stack, starting it on first use. A test that
// cannot have it fails in CI and skips elsewhere. When the test fails, the
// agents' last log lines are added to its output.
func Start(tb testing.TB) *localstack.Stack {
	tb.Helper()
	return shared.get(tb, false, []string{"nomad", "consul"})
}

// StartCluster returns the package's cluster stack (three Consul servers,
// three Nomad servers, two client nodes), starting it on first use, as Start
// does the single-agent one.
func StartCluster(tb testing.TB) *localstack.Stack {
	tb.Helper()
	return cluster.get(tb, true, []string{"nomad-server-1", "nomad-server-2", "nomad-server-3", "nomad-client-1", "nomad-client-2"})
}

// get starts the stack on first use. When the test fails, the last lines
// of the logs of the agents named are added to its output: few, so that
// the test's own messages stay in view above them.
func (p *pkgStack) get(tb testing.TB, clustered bool, logs []string) *localstack.Stack {
	tb.Helper()
	testimage.RequireDocker(tb)
	p.once.Do(func() { p.err = p.start(tb, clustered) })
	if p.err != nil {
		testenv.Unavailable(tb, "local stack: %v", p.err)
	}
	s := p.stack
	tb.Cleanup(func() {
		if !tb.Failed() {
			return
		}
		for _, name := range logs {
			tb.Logf("last lines of %s.log:\n%s", name, s.LogTail(name, 12))
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

// ClusterBinaries is Binaries for a test of the cluster stack, which it
// starts rather than the single-agent one.
func ClusterBinaries(tb testing.TB) localstack.Binaries {
	tb.Helper()
	StartCluster(tb)
	return cluster.bin
}

func (p *pkgStack) start(tb testing.TB, clustered bool) error {
	tb.Helper()
	// A cold build of nomad and consul takes minutes: show its progress.
	bin, err := localstack.FindBinaries(context.Background(), testimage.RepoRoot(tb), os.Stderr)
	if err != nil {
		return err
	}
	lo, hi, release, err := localstack.ReserveDynamicRange()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "counter-stack-")
	if err != nil {
		release()
		return err
	}
	p.dir, p.release, p.bin = dir, release, bin
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, localstack.Config{
		Dir:     dir,
		Bin:     bin,
		Ports:   localstack.Ports{MinDynamic: lo, MaxDynamic: hi},
		Cluster: clustered,
	})
	if err != nil {
		return err
	}
	// The deployer runs with tokens of its own policies, as it would on a
	// secured cluster, never with the management tokens.
	nomadRules, consulRules, err := readPolicies(testimage.RepoRoot(tb))
	if err == nil {
		err = s.DeployerTokens(ctx, nomadRules, consulRules)
	}
	if err != nil {
		_ = s.Stop(context.Background())
		return err
	}
	p.stack = s
	return nil
}

// DeployerPolicies reads the deployer's Nomad and Consul policies from
// deployer/policies.
func DeployerPolicies(tb testing.TB) (nomadRules, consulRules string) {
	tb.Helper()
	n, c, err := readPolicies(testimage.RepoRoot(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return n, c
}

func readPolicies(root string) (nomadRules, consulRules string, err error) {
	dir := filepath.Join(root, "deployer", "policies")
	n, err := os.ReadFile(filepath.Join(dir, "nomad.hcl"))
	if err != nil {
		return "", "", err
	}
	c, err := os.ReadFile(filepath.Join(dir, "consul.hcl"))
	if err != nil {
		return "", "", err
	}
	return string(n), string(c), nil
}

// Clients returns Nomad and Consul clients of the stack with its management
// tokens.
func Clients(tb testing.TB, s *localstack.Stack) (*nomad.Client, *consul.Client) {
	tb.Helper()
	nc, err := nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: s.NomadToken})
	if err != nil {
		tb.Fatal(err)
	}
	cc, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.ConsulToken})
	if err != nil {
		tb.Fatal(err)
	}
	return nc, cc
}

// GrantJob lets the tasks of the job read their config snapshots under
// the default prefix, as an operator does for each environment's job on a
// cluster with ACLs.
func GrantJob(tb testing.TB, s *localstack.Stack, job string) {
	tb.Helper()
	if !s.ACL {
		return
	}
	_, cc := Clients(tb, s)
	folder := configstore.New(nil, configstore.DefaultPrefix).Folder("default", job)
	if err := access.GrantJobConfig(context.Background(), cc, "default", job, folder); err != nil {
		tb.Fatal(err)
	}
}

// Name returns a short name unique to the test, usable as a Nomad job name
// and a Consul KV prefix, so tests sharing a stack never share state.
func Name(tb testing.TB, prefix string) string {
	tb.Helper()
	sum := sha256.Sum256(fmt.Appendf(nil, "%s %d", tb.Name(), time.Now().UnixNano()))
	return prefix + "-" + hex.EncodeToString(sum[:4])
}
