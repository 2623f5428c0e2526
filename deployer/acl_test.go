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
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
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
	good, bad := releaseImages(t, f.stack)
	rdb := redistest.Start(t)
	f.writeEnv("dev", rdb, 1, "")
	if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK {
		t.Fatalf("first release, with the deployer's policies: exit %d %+v", code, rec)
	}
	// A second, on another Redis, so that there is a v0 to roll back to.
	f.writeEnv("dev", redistest.Start(t), 1, "")
	if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK {
		t.Fatalf("second release, with the deployer's policies: exit %d %+v", code, rec)
	}
	nomadRules, consulRules := stacktest.DeployerPolicies(t)

	type drop struct {
		name         string
		nomad, cons  string // the rules the token gets
		want         string // in the one line
		doing        string // in it too: what the deployer was doing
		unknownToken string // "NOMAD_TOKEN" or "CONSUL_HTTP_TOKEN": a token no server knows
	}
	var drops []drop
	// Which Nomad call fails first differs by command and capability
	// (render, read, plan); that the line names it does not.
	const nomadDoing = "while the deployer tried to "
	// Nomad's capabilities, one at a time. read-logs only serves the causes
	// of a failed release: its subtest below fails one.
	for _, c := range regexp.MustCompile(`"([a-z-]+)",`).FindAllStringSubmatch(nomadRules, -1) {
		if c[1] == "read-logs" {
			continue
		}
		without := strings.Replace(nomadRules, c[0], "", 1)
		drops = append(drops, drop{name: "nomad " + c[1], nomad: without, cons: consulRules,
			want: `Nomad denied ` + c[1] + ` in namespace "default" to this token (NOMAD_TOKEN)`, doing: nomadDoing})
	}
	// Consul's rules, one block at a time, and the operation each one
	// stops first. Consul does not refuse the reads of keys, services and
	// nodes a token may not read, it leaves them out of its answer; the
	// deployer takes that as the refusal it is.
	stopped := map[string]string{
		"key_prefix":     `Consul denied key:read on "counter/releases/default/` + f.job + `/`,
		"session_prefix": "Consul denied session:write",
		"service_prefix": `Consul denied service:read on "` + f.job + `" or node:read on one of its nodes`,
		"node_prefix":    `Consul denied service:read on "` + f.job + `" or node:read on one of its nodes`,
	}
	doing := map[string]string{
		"key_prefix":     "while the deployer tried to read config snapshot counter/releases/default/" + f.job + "/",
		"session_prefix": "while the deployer tried to take the deploy lock counter/releases/.locks/default/" + f.job + ":",
		"service_prefix": "while the deployer tried to list the instances of service " + f.job + ":",
		"node_prefix":    "while the deployer tried to list the instances of service " + f.job + ":",
	}
	for _, b := range regexp.MustCompile(`(?m)^([a-z_]+) "([^"]*)" \{\n[^}]*\}\n`).FindAllStringSubmatch(consulRules, -1) {
		if stopped[b[1]] == "" {
			t.Fatalf("the Consul policy has a %s rule this test does not know", b[1])
		}
		drops = append(drops, drop{name: "consul " + b[1] + " " + b[2], nomad: nomadRules, cons: strings.Replace(consulRules, b[0], "", 1),
			want: stopped[b[1]], doing: doing[b[1]]})
	}
	if len(drops) != 6 {
		t.Fatalf("read %d capabilities from the policies, want read-job, submit-job and 4 Consul rules", len(drops))
	}
	drops = append(drops,
		drop{name: "unknown nomad token", nomad: nomadRules, cons: consulRules, unknownToken: "NOMAD_TOKEN",
			want: "Nomad does not know this token (NOMAD_TOKEN)", doing: nomadDoing},
		drop{name: "unknown consul token", nomad: nomadRules, cons: consulRules, unknownToken: "CONSUL_HTTP_TOKEN",
			want: "Consul does not know this token (CONSUL_HTTP_TOKEN)", doing: "while the deployer tried to read config snapshot counter/releases/default/" + f.job + "/"},
	)

	for i, d := range drops {
		t.Run(d.name, func(t *testing.T) {
			// A real change: the app would move to another Redis.
			f.writeEnv("dev", redistest.Start(t), 1, "")
			env := maps.Clone(f.env)
			env["NOMAD_TOKEN"], env["CONSUL_HTTP_TOKEN"] = f.tokens(fmt.Sprintf("drop-%d", i), d.nomad, d.cons)
			if d.unknownToken != "" {
				env[d.unknownToken] = "6d3a8f4e-1b2c-4d5e-8f90-a1b2c3d4e5f6"
			}
			// Each command that writes needs every capability: the first
			// it lacks stops it before anything is written.
			for _, args := range [][]string{
				{"submit", "-env", "dev", "-image", good},
				{"rollback", "-env", "dev", "-to", "v0"},
			} {
				versions, snapshots := len(f.versions()), f.snapshots()
				_, stderr, code := runCLI(t, f.dir, env, args...)
				lines := strings.Split(strings.TrimSpace(stderr), "\n")
				last := lines[len(lines)-1]
				if code != exitError || !strings.Contains(last, d.want) || !strings.Contains(last, d.doing) {
					t.Errorf("%s: exit %d, last line %q; want exit 1 and %q, %q", args[0], code, last, d.want, d.doing)
				}
				if d.unknownToken == "" && !strings.Contains(last, "deployer/policies/") {
					t.Errorf("%s: the refusal does not name the policy file to change: %q", args[0], last)
				}
				if n := len(f.versions()); n != versions {
					t.Errorf("a refused %s registered %d version(s)", args[0], n-versions)
				}
				if now := f.snapshots(); !slices.Equal(now, snapshots) {
					t.Errorf("a refused %s left snapshots %v, had %v", args[0], now, snapshots)
				}
				lock := configstore.New(nil, configstore.DefaultPrefix).LockKey("default", f.job)
				if p, _, err := f.kv.KV().Get(lock, nil); err != nil || p != nil {
					t.Errorf("a refused %s left the lock %s: %v %v", args[0], lock, p, err)
				}
			}
		})
	}
	// read-logs serves only the report of a failed release: without it,
	// the release fails as it would (Nomad reverts it), and its causes say
	// why the task's stderr is missing, in the same words.
	t.Run("nomad read-logs", func(t *testing.T) {
		f.writeEnv("dev", redistest.Start(t), 1, "min_healthy_time = \"1s\"\nhealthy_deadline = \"8s\"\nprogress_deadline = \"30s\"")
		without := strings.Replace(nomadRules, `"read-logs",`, "", 1)
		if without == nomadRules {
			t.Fatal("deployer/policies/nomad.hcl has no read-logs")
		}
		g := *f
		g.t, g.env = t, maps.Clone(f.env)
		g.env["NOMAD_TOKEN"], g.env["CONSUL_HTTP_TOKEN"] = f.tokens("drop-logs", without, consulRules)
		rec, code, _ := submitJSON(t, &g, "-env", "dev", "-image", bad)
		if code != exitAutoReverted || len(rec.Causes) == 0 {
			t.Fatalf("broken release without read-logs: exit %d, %d causes; want %d and its causes", code, len(rec.Causes), exitAutoReverted)
		}
		c := rec.Causes[0]
		want := `Nomad denied read-logs in namespace "default" to this token (NOMAD_TOKEN) while the deployer tried to read the logs of allocation ` + c.AllocID[:8] +
			`: add it to the deployer's Nomad policy (deployer/policies/nomad.hcl)`
		if c.StderrUnread != want || len(c.Stderr) != 0 || len(c.Events) == 0 {
			t.Errorf("cause %+v\nwant its events, no stderr and stderr_unread %q", c, want)
		}
	})
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
		x.writeEnv("dev", redistest.Start(t), 1, "")
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
