package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/access"
	"github.com/kodekloud/counter/internal/release"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// The commands for a secured cluster of one's own in
// docs/secured-cluster.md work as written. Run on a stack with ACLs on
// whose Consul does not trust Nomad's identities yet, they make that
// trust, prod's job policy, the deployer's tokens and an operator's: two
// releases made with the deployer's tokens
// run and count in the Redis their config names (so the task read its
// snapshot with the token its identity got), and the operator's token
// reverts the job with nomad job revert, config included.
func TestDocsSecuredClusterCommandsWorkAsWritten(t *testing.T) {
	t.Parallel()
	s := stacktest.StartOwn(t)
	nc, cc := stacktest.Clients(t, s)
	// As on a cluster nobody set up for workload identity: deleting the
	// auth method deletes its binding rules too.
	if _, err := cc.ACL().AuthMethodDelete(access.AuthMethod, nil); err != nil {
		t.Fatal(err)
	}
	root := imagetest.RepoRoot(t)
	block := readmeBlock(t, filepath.Join(root, "docs", "secured-cluster.md"), "<!-- run by TestDocsSecuredClusterCommandsWorkAsWritten -->")

	// The nomad and consul CLIs of the stack, first on PATH.
	bin := stacktest.Binaries(t)
	path := t.TempDir()
	for name, target := range map[string]string{"nomad": bin.Nomad, "consul": bin.Consul} {
		if err := os.Symlink(target, filepath.Join(path, name)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", block)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PATH="+path+":"+os.Getenv("PATH"), "USER=tester",
		"NOMAD_ADDR="+s.NomadAddr, "NOMAD_TOKEN="+s.NomadToken,
		"CONSUL_HTTP_ADDR="+s.ConsulAddr, "CONSUL_HTTP_TOKEN="+s.ConsulToken)
	if out, err := cmd.CombinedOutput(); err != nil {
		// Not the output: it holds the secrets of the tokens it made.
		t.Fatalf("the commands of docs/secured-cluster.md failed: %v (last line: %q)", err, lastLine(string(out)))
	}

	f := fixtureOf(t, s, "counter-prod")
	f.env["NOMAD_TOKEN"] = nomadTokenNamed(t, nc, "deployer")
	f.env["CONSUL_HTTP_TOKEN"] = consulTokenDescribed(t, cc, "deployer")
	operator := nomadTokenNamed(t, nc, "tester")
	for kind, secret := range map[string]string{
		"docs' deployer's Nomad token": f.env["NOMAD_TOKEN"], "docs' deployer's Consul token": f.env["CONSUL_HTTP_TOKEN"],
		"docs' operator's Nomad token": operator,
	} {
		stacktest.Secret(t, s, kind, secret)
	}
	image := imageVariant(t, s, 1)
	first, second := redistest.Start(t), redistest.Start(t)
	for rdb, n := range map[*redistest.Server]string{first: "100", second: "200"} {
		if err := rdb.Set("visitorCount", n); err != nil {
			t.Fatal(err)
		}
	}
	submit := func(rdb *redistest.Server, want string) {
		t.Helper()
		f.writeEnv("prod", rdb, 1, "")
		rec, code, _ := submitJSON(t, f, "-env", "prod", "-image", image)
		if code != exitOK {
			t.Fatalf("submit with the deployer tokens of docs/secured-cluster.md: exit %d %+v", code, rec)
		}
		if _, body := get(t, f.appURL(rec.ConfigHash)); !strings.Contains(body, "Visitor Count: "+want) {
			t.Fatalf("the release answers %q, want count %s", body, want)
		}
	}
	submit(first, "101")
	submit(second, "201")

	if _, code := stacktest.NomadAs(t, s, "", operator, "job", "revert", "-detach", f.job, "0"); code != 0 {
		t.Fatalf("nomad job revert with the operator token of docs/secured-cluster.md: exit %d", code)
	}
	if dep := f.waitForDeployment(2, 2*time.Minute); dep.Status != nomad.DeploymentStatusSuccessful {
		t.Fatalf("the revert's deployment: %s", dep.Status)
	}
	// Back on the first release's config: its Redis counts on.
	if _, body := get(t, f.appURL(f.versions()[0].Meta[release.MetaConfigHash])); !strings.Contains(body, "Visitor Count: 102") {
		t.Errorf("after nomad job revert the app answers %q, want count 102 (the first release's Redis)", body)
	}
}

// readmeBlock returns the first fenced block after the line that starts
// with marker.
func readmeBlock(t *testing.T, file, marker string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "\n"+marker)
	if !ok {
		t.Fatalf("%s has no %q", file, marker)
	}
	_, after, ok = strings.Cut(after, "```sh\n")
	block, _, closed := strings.Cut(after, "\n```")
	if !ok || !closed {
		t.Fatalf("%s: no ```sh block after %q", file, marker)
	}
	return block
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// nomadTokenNamed is the secret of the Nomad token named name.
func nomadTokenNamed(t *testing.T, nc *nomad.Client, name string) string {
	t.Helper()
	list, _, err := nc.ACLTokens().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		if e.Name == name {
			tok, _, err := nc.ACLTokens().Info(e.AccessorID, nil)
			if err != nil {
				t.Fatal(err)
			}
			return tok.SecretID
		}
	}
	t.Fatalf("no Nomad token named %q", name)
	return ""
}

// consulTokenDescribed is the secret of the Consul token described so.
func consulTokenDescribed(t *testing.T, cc *consul.Client, description string) string {
	t.Helper()
	list, _, err := cc.ACL().TokenList(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		if e.Description == description {
			tok, _, err := cc.ACL().TokenRead(e.AccessorID, nil)
			if err != nil {
				t.Fatal(err)
			}
			return tok.SecretID
		}
	}
	t.Fatalf("no Consul token described %q", description)
	return ""
}
