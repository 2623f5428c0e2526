package main

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/access"
	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/release"
	"github.com/kodekloud/counter/internal/stacktest"
	"github.com/kodekloud/counter/internal/testredis"
)

// Every capability the deployer's policies give stops a release when it is
// missing: before anything is written, with one line that names the system,
// the capability and the policy file, exit 1. So does a token the servers do
// not know.
func TestEachCapabilityOfTheDeployerPolicyIsNeeded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if !f.stack.ACL {
		t.Fatal("the test stack runs without ACLs")
	}
	good, _ := releaseImages(t, f.stack)
	rdb := testredis.Start(t)
	f.writeEnv("dev", rdb, 1, "")
	if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK {
		t.Fatalf("first release, with the deployer's policies: exit %d %+v", code, rec)
	}
	nomadRules, consulRules := stacktest.DeployerPolicies(t)

	type drop struct {
		name         string
		nomad, cons  string // the rules the token gets
		want         string // in the one line
		unknownToken string // "NOMAD_TOKEN" or "CONSUL_HTTP_TOKEN": a token no server knows
	}
	var drops []drop
	// Nomad's capabilities, one at a time. read-logs only serves the causes
	// of a failed release, which TestFailureNamesTheMissingLogsCapability
	// covers.
	for _, c := range regexp.MustCompile(`"([a-z-]+)",`).FindAllStringSubmatch(nomadRules, -1) {
		if c[1] == "read-logs" {
			continue
		}
		without := strings.Replace(nomadRules, c[0], "", 1)
		drops = append(drops, drop{name: "nomad " + c[1], nomad: without, cons: consulRules,
			want: `Nomad denied ` + c[1] + ` in namespace "default" to this token (NOMAD_TOKEN)`})
	}
	// Consul's rules, one block at a time. The read of services and nodes
	// only finds the release's addresses, which TestMissingInstanceReadIsSaid
	// covers.
	for _, b := range regexp.MustCompile(`(?m)^([a-z_]+) "([^"]*)" \{\n[^}]*\}\n`).FindAllStringSubmatch(consulRules, -1) {
		if b[1] == "service_prefix" || b[1] == "node_prefix" {
			continue
		}
		perm := map[string]string{"key_prefix": "key:", "session_prefix": "session:write"}[b[1]]
		drops = append(drops, drop{name: "consul " + b[1] + " " + b[2], nomad: nomadRules, cons: strings.Replace(consulRules, b[0], "", 1),
			want: "Consul denied " + perm})
	}
	if len(drops) < 4 {
		t.Fatalf("read %d capabilities from the policies, want read-job, submit-job, key_prefix, session_prefix", len(drops))
	}
	drops = append(drops,
		drop{name: "unknown nomad token", nomad: nomadRules, cons: consulRules, unknownToken: "NOMAD_TOKEN",
			want: "Nomad does not know this token (NOMAD_TOKEN)"},
		drop{name: "unknown consul token", nomad: nomadRules, cons: consulRules, unknownToken: "CONSUL_HTTP_TOKEN",
			want: "Consul does not know this token (CONSUL_HTTP_TOKEN)"},
	)

	for i, d := range drops {
		t.Run(d.name, func(t *testing.T) {
			// A real change: the app would move to another Redis.
			f.writeEnv("dev", testredis.Start(t), 1, "")
			env := maps.Clone(f.env)
			env["NOMAD_TOKEN"], env["CONSUL_HTTP_TOKEN"] = f.tokens(fmt.Sprintf("drop-%d", i), d.nomad, d.cons)
			if d.unknownToken != "" {
				env[d.unknownToken] = "6d3a8f4e-1b2c-4d5e-8f90-a1b2c3d4e5f6"
			}
			versions, snapshots := len(f.versions()), f.snapshots()
			_, stderr, code := runCLI(t, f.dir, env, "submit", "-env", "dev", "-image", good)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			if code != exitError || !strings.Contains(last, d.want) {
				t.Errorf("submit: exit %d, last line %q; want exit 1 and %q", code, last, d.want)
			}
			if d.unknownToken == "" && !strings.Contains(last, "deployer/policies/") {
				t.Errorf("the refusal does not name the policy file to change: %q", last)
			}
			if n := len(f.versions()); n != versions {
				t.Errorf("a refused submit registered %d version(s)", n-versions)
			}
			if now := f.snapshots(); !slices.Equal(now, snapshots) {
				t.Errorf("a refused submit left snapshots %v, had %v", now, snapshots)
			}
			lock := configstore.New(nil, configstore.DefaultPrefix).LockKey("default", f.job)
			if p, _, err := f.kv.KV().Get(lock, nil); err != nil || p != nil {
				t.Errorf("a refused submit left the lock %s: %v %v", lock, p, err)
			}
		})
	}
}

// tokens makes a Nomad and a Consul token with the given rules, as policies
// called after the job and name; no Consul rules, no Consul token. They are
// secrets of the stack's: none may show in its logs or a test's output.
func (f *fixture) tokens(name, nomadRules, consulRules string) (nomadToken, consulToken string) {
	f.t.Helper()
	ctx := context.Background()
	name = f.job + "-" + name
	if err := access.PutNomadPolicy(ctx, f.nomad, name, nomadRules, "test"); err != nil {
		f.t.Fatal(err)
	}
	nt, err := access.NomadToken(ctx, f.nomad, name, "test "+name)
	if err != nil {
		f.t.Fatal(err)
	}
	stacktest.Secret(f.t, f.stack, "Nomad token of policy "+name, nt)
	if consulRules == "" {
		return nt, ""
	}
	if err := access.PutConsulPolicy(ctx, f.kv, name, consulRules); err != nil {
		f.t.Fatal(err)
	}
	ct, err := access.ConsulToken(ctx, f.kv, name, "test "+name)
	if err != nil {
		f.t.Fatal(err)
	}
	stacktest.Secret(f.t, f.stack, "Consul token of policy "+name, ct)
	return nt, ct
}

// A job's tasks read their own config and nothing else: the Consul token
// of the running task reads its job's snapshot and is denied another job's;
// a version whose template points at another job's snapshot never turns
// healthy.
func TestAJobReadsOnlyItsOwnConfig(t *testing.T) {
	t.Parallel()
	f, other := newFixture(t), newFixture(t)
	good, _ := releaseImages(t, f.stack)
	for _, x := range []*fixture{f, other} {
		x.writeEnv("dev", testredis.Start(t), 1, "")
		if rec, code, _ := submitJSON(t, x, "-env", "dev", "-image", good); code != exitOK {
			t.Fatalf("release of %s: exit %d %+v", x.job, code, rec)
		}
	}
	own := f.versions()[0].Meta[release.MetaConfigPath]
	theirs := other.versions()[0].Meta[release.MetaConfigPath]

	// The running task's token, found by the description Nomad's login
	// gives it and by its policy.
	token := f.taskToken()
	c, err := consul.NewClient(&consul.Config{Address: f.stack.ConsulAddr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if p, _, err := c.KV().Get(own+"/PORT", nil); err != nil || p == nil {
		t.Errorf("the task's token cannot read its own snapshot %s: %v", own, err)
	}
	if _, _, err := c.KV().Get(theirs+"/PORT", nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("the task's token read another job's snapshot %s: %v, want 403", theirs, err)
	}

	// A version of f's job whose template reads other's snapshot.
	job := f.versions()[0]
	job.Stable, job.Version, job.JobModifyIndex, job.VersionTag = nil, nil, nil, nil
	tmpl := job.TaskGroups[0].Tasks[0].Templates[0]
	*tmpl.EmbeddedTmpl = strings.ReplaceAll(*tmpl.EmbeddedTmpl, own, theirs)
	u := job.TaskGroups[0].Update
	u.HealthyDeadline, u.ProgressDeadline, u.AutoRevert = ptr(15*time.Second), ptr(20*time.Second), ptr(true)
	if _, _, err := f.nomad.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	dep := f.waitForDeployment(1, 2*time.Minute)
	if dep.Status != nomad.DeploymentStatusFailed {
		t.Errorf("the version that reads another job's config: deployment %s, want failed", dep.Status)
	}
	// Nomad goes back to the version that reads the job's own config, and
	// that one turns healthy.
	if back := f.waitForDeployment(2, 2*time.Minute); back.Status != nomad.DeploymentStatusSuccessful {
		t.Errorf("the auto-revert: deployment %s, want successful", back.Status)
	}
	if got := f.versions()[0].Meta[release.MetaConfigPath]; got != own {
		t.Errorf("after the auto-revert the job reads %s, want %s", got, own)
	}
}

func ptr[T any](v T) *T { return &v }

// taskToken is the secret of the Consul token Nomad's login made for the
// running task of the fixture's job.
func (f *fixture) taskToken() string {
	f.t.Helper()
	acl := f.kv.ACL()
	list, _, err := acl.TokenList(nil)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, e := range list {
		if e.AuthMethod != access.AuthMethod || len(e.Policies) != 1 || e.Policies[0].Name != access.JobPolicy("default", f.job) {
			continue
		}
		tok, _, err := acl.TokenRead(e.AccessorID, nil)
		if err != nil {
			f.t.Fatal(err)
		}
		stacktest.Secret(f.t, f.stack, "Consul token of job "+f.job+"'s task", tok.SecretID)
		return tok.SecretID
	}
	f.t.Fatalf("no Consul token of job %s's task among %d tokens", f.job, len(list))
	return ""
}
