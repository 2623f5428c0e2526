// Package stacktest gives an integration test package one private local
// stack (Consul, Nomad, Redis, registry) on free ports, started on first use
// and stopped when the package's tests end. Tests that share it keep apart
// by the job names and KV prefixes that Name gives them.
//
// It also keeps the stack's token secrets (its management and deployer
// tokens, and those tests record with Secret): the run fails when one shows
// in an agent's log, and NoSecret fails a test when one shows in what it
// read.
package stacktest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/access"
	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/envtest"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
)

// pkgStack is a stack a test package starts once and shares.
type pkgStack struct {
	once    sync.Once
	stack   *localstack.Stack
	bin     localstack.Binaries
	release func()
	dir     string
	err     error

	// mu guards the stack's pointer (another stack's test looks it up
	// while this one starts) and what tests add while it runs.
	mu sync.Mutex
	// secrets maps each token secret of the stack to its kind, which
	// messages name in its place.
	secrets map[string]string
	// operator is the secret of the operator's Nomad token.
	operator string
	// cfg is how a test's own stack was started, for RestartOwn.
	cfg localstack.Config
}

// shared is the package's single-agent stack; cluster its cluster stack.
// A test binary's tests share them, so they live as long as it does.
var shared, cluster pkgStack

// stop stops the stack if it was started, checks its agents' logs for
// its secrets, and frees its ports and folder.
func (p *pkgStack) stop() error {
	var errs []error
	if p.stack != nil {
		if err := p.stack.Stop(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("stop stack: %w", err))
		}
		// Stopped, the agents have written all they will.
		errs = append(errs, p.checkLogs())
	}
	if p.release != nil {
		p.release()
	}
	if p.dir != "" {
		_ = os.RemoveAll(p.dir)
	}
	return errors.Join(errs...)
}

// checkLogs returns an error for each log file of the stack's folder (the
// agents', Redis's and the registry's output) that holds one of its
// secrets, naming the file and the secret's kind. Only the logs: the
// folder's configs and secrets hold tokens by design.
func (p *pkgStack) checkLogs() error {
	files, err := filepath.Glob(filepath.Join(p.stack.Dir, "*.log"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no log files in %s to check for secrets", p.stack.Dir)
	}
	var errs []error
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			errs = append(errs, fmt.Errorf("check %s for secrets: %w", file, err))
			continue
		}
		for _, kind := range p.leaked(string(b)) {
			errs = append(errs, fmt.Errorf("%s holds the secret of the %s", file, kind))
		}
	}
	return errors.Join(errs...)
}

// leaked returns the kinds of the stack's secrets that text holds.
func (p *pkgStack) leaked(text string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var kinds []string
	for secret, kind := range p.secrets {
		if strings.Contains(text, secret) {
			kinds = append(kinds, kind)
		}
	}
	slices.Sort(kinds)
	return kinds
}

// addSecret records secret as a secret of kind; "" is none.
func (p *pkgStack) addSecret(kind, secret string) {
	if secret == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.secrets == nil {
		p.secrets = map[string]string{}
	}
	p.secrets[secret] = kind
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
			for _, line := range strings.Split(err.Error(), "\n") {
				fmt.Fprintf(os.Stderr, "stacktest: %s\n", line)
			}
			code = 1
		}
	}
	return code
}

// Start returns the package's stack, starting it on first use. A test that
// cannot have it fails in CI and skips elsewhere; under go test -short it
// skips before starting anything. When the test fails, the agents' last
// log lines are added to its output.
func Start(tb testing.TB) *localstack.Stack {
	tb.Helper()
	return shared.get(tb, false, []string{"nomad", "consul"})
}

// StartCluster returns the package's cluster stack (three Consul servers,
// three Nomad servers, two client nodes, and a front door for dev:
// ClusterFrontDoor), starting it on first use, as Start does the
// single-agent one.
func StartCluster(tb testing.TB) *localstack.Stack {
	tb.Helper()
	return cluster.get(tb, true, []string{"nomad-server-1", "nomad-server-2", "nomad-server-3", "nomad-client-1", "nomad-client-2"})
}

// get starts the stack on first use. When the test fails, the last lines
// of the logs of the agents named are added to its output: few, so that
// the test's own messages stay in view above them.
func (p *pkgStack) get(tb testing.TB, clustered bool, logs []string) *localstack.Stack {
	tb.Helper()
	envtest.NeedsServers(tb, "a local stack (Nomad, Consul, Redis, registry, Docker)")
	imagetest.RequireDocker(tb)
	p.once.Do(func() { p.err = p.start(tb, clustered) })
	if p.err != nil {
		envtest.Unavailable(tb, "local stack: %v", p.err)
	}
	s := p.stack
	tb.Cleanup(func() {
		if !tb.Failed() {
			return
		}
		for _, name := range logs {
			tb.Logf("last lines of %s.log:\n%s", name, Redact(s.LogTail(name, 12)))
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
	bin, err := localstack.FindBinaries(context.Background(), imagetest.RepoRoot(tb), os.Stderr)
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
	cfg := localstack.Config{
		Dir:     dir,
		Bin:     bin,
		Ports:   localstack.Ports{MinDynamic: lo, MaxDynamic: hi},
		Cluster: clustered,
	}
	if clustered {
		if cfg.Environments, err = clusterDoor(tb, dir); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		return err
	}
	// The deployer runs with tokens of its own policies, as it would on a
	// secured cluster, never with the management tokens.
	nomadRules, consulRules, err := readPolicies(imagetest.RepoRoot(tb))
	if err == nil {
		err = s.DeployerTokens(ctx, nomadRules, consulRules)
	}
	// The tests run the nomad CLI as a person would. Made now, while every
	// server runs: a test may have the stack's first one down.
	operator := ""
	if err == nil {
		operator, err = operatorToken(ctx, s, imagetest.RepoRoot(tb))
	}
	if err != nil {
		_ = s.Stop(context.Background())
		return err
	}
	for kind, secret := range map[string]string{
		"Nomad management token": s.NomadToken, "Consul management token": s.ConsulToken,
		"deployer's Nomad token": s.DeployerNomadToken, "deployer's Consul token": s.DeployerConsulToken,
		"operator's Nomad token": operator, "Consul DNS token": s.DNSToken(),
		"Prometheus's Consul token": s.PrometheusToken(),
	} {
		p.addSecret(kind, secret)
	}
	p.mu.Lock()
	p.stack, p.operator = s, operator
	p.mu.Unlock()
	return nil
}

// clusterDoor writes, in the cluster stack's folder dir, the environment
// file its front door is made from, as make up CLUSTER=1 makes dev's: dev
// of a job named for the package's run, at a free port of 127.0.0.1 (the
// edge address: no node's, so killing a node leaves it). It returns the
// file's folder.
func clusterDoor(tb testing.TB, dir string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("a free port for the cluster's front door: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	envs := filepath.Join(dir, "environments")
	src := fmt.Sprintf("job = %q\nurl = %q\ndatacenters = [\"dc1\"]\nconfig {\n  HOST = \"127.0.0.1\"\n  PORT = 6379\n}\n",
		Name(tb, "door"), "http://"+addr+"/")
	if err := os.MkdirAll(envs, 0o755); err != nil {
		return "", err
	}
	return envs, os.WriteFile(filepath.Join(envs, "dev.hcl"), []byte(src), 0o644)
}

// ClusterFrontDoor returns the front door of the package's cluster stack
// s (StartCluster): HAProxy serves environment dev, the Consul service of
// the job it names, at its URL, asking every Consul agent of the cluster.
// The job is one for the whole package: the tests that release it run one
// at a time, as the cluster's tests do.
func ClusterFrontDoor(tb testing.TB, s *localstack.Stack) localstack.FrontDoor {
	tb.Helper()
	for _, d := range s.FrontDoors {
		if d.Env == "dev" {
			return d
		}
	}
	tb.Fatalf("stacktest: the stack in %s has no front door for dev (front doors %+v)", s.Dir, s.FrontDoors)
	return localstack.FrontDoor{}
}

// owns are the stacks tests started with StartOwn; ownsMu guards it.
var (
	ownsMu sync.Mutex
	owns   []*pkgStack
)

// stacks returns the package's stacks and the tests' own.
func stacks() []*pkgStack {
	ownsMu.Lock()
	defer ownsMu.Unlock()
	return append([]*pkgStack{&shared, &cluster}, owns...)
}

// of returns the package stack that s is.
func of(tb testing.TB, s *localstack.Stack) *pkgStack {
	tb.Helper()
	for _, p := range stacks() {
		p.mu.Lock()
		is := p.stack == s
		p.mu.Unlock()
		if is {
			return p
		}
	}
	tb.Fatalf("stacktest: the stack in %s is not one stacktest started", s.Dir)
	return nil
}

// Secret records secret, a token a test made on stack s, as one of the
// stack's secrets; kind says what it is (never the secret itself) in the
// messages that find it.
func Secret(tb testing.TB, s *localstack.Stack, kind, secret string) {
	tb.Helper()
	of(tb, s).addSecret(kind, secret)
}

// NoSecret fails the test if text, the output or data a test read that
// what names, holds a secret of the package's stacks. The message names
// the secret's kind, never the secret.
func NoSecret(tb testing.TB, what, text string) {
	tb.Helper()
	for _, p := range stacks() {
		for _, kind := range p.leaked(text) {
			tb.Errorf("%s holds the secret of the %s", what, kind)
		}
	}
}

// Redact returns text with each secret of the package's stacks in it
// replaced by its kind, for what a test logs: a secret that shows fails the
// test (NoSecret) or the run (the logs' check), and the log of the failure
// must not hold it either.
func Redact(text string) string {
	for _, p := range stacks() {
		p.mu.Lock()
		for secret, kind := range p.secrets {
			text = strings.ReplaceAll(text, secret, "<secret of the "+kind+">")
		}
		p.mu.Unlock()
	}
	return text
}

// OperatorToken returns the Nomad token of stack s with a person's
// policy, deployer/policies/nomad-operator.hcl, which docs/secured-cluster.md gives
// people for the Nomad UI and CLI; "" on a stack without ACLs.
func OperatorToken(tb testing.TB, s *localstack.Stack) string {
	tb.Helper()
	p := of(tb, s)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.operator
}

// operatorToken makes stack s's operator token (OperatorToken) from the
// policy file in the checkout at root, as make up does.
func operatorToken(ctx context.Context, s *localstack.Stack, root string) (string, error) {
	if !s.ACL {
		return "", nil
	}
	rules, err := os.ReadFile(filepath.Join(root, "deployer", "policies", "nomad-operator.hcl"))
	if err != nil {
		return "", err
	}
	file, err := s.OperatorToken(ctx, string(rules))
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(file)
	return strings.TrimSpace(string(b)), err
}

// Nomad runs the nomad CLI of stack s against its Nomad server at addr (""
// for the stack's first) with the operator's token, as a person would, and
// returns its output (stdout and stderr) and exit code. The output must
// hold no secret.
func Nomad(tb testing.TB, s *localstack.Stack, addr string, args ...string) (string, int) {
	tb.Helper()
	return NomadAs(tb, s, addr, OperatorToken(tb, s), args...)
}

// NomadAs is Nomad with the token given, one the test made.
func NomadAs(tb testing.TB, s *localstack.Stack, addr, token string, args ...string) (string, int) {
	tb.Helper()
	p := of(tb, s)
	if addr == "" {
		addr = s.NomadAddr
	}
	cmd := exec.Command(p.bin.Nomad, args...)
	cmd.Env = append(os.Environ(), "NOMAD_ADDR="+addr, "NOMAD_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		tb.Fatalf("nomad %s: %v", strings.Join(args, " "), err)
	}
	tb.Logf("nomad %s: exit %d\n%s", strings.Join(args, " "), code, Redact(string(out)))
	NoSecret(tb, "the output of nomad "+strings.Join(args, " "), string(out))
	return string(out), code
}

// DeployerPolicies reads the deployer's Nomad and Consul policies from
// deployer/policies.
func DeployerPolicies(tb testing.TB) (nomadRules, consulRules string) {
	tb.Helper()
	n, c, err := readPolicies(imagetest.RepoRoot(tb))
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
