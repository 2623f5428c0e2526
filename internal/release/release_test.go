package release

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/imageref"
)

func TestQuoteTurnsOffHCLTemplates(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", `"plain"`},
		{`say "hi"`, `"say \"hi\""`},
		{"${var.x}", `"$${var.x}"`},
		{"%{ if true }", `"%%{ if true }"`},
		{"line\nbreak", `"line\nbreak"`},
	}
	for _, tt := range tests {
		if got := quote(tt.in); got != tt.want {
			t.Errorf("quote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestVariablesCarryTheRelease(t *testing.T) {
	env, err := environment.Parse("dev.hcl", "dev", []byte(`
datacenters = ["dc1", "dc2"]
config {
  HOST = "redis"
  PORT = 6379
}
update {
  canary = 1
}
`))
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := imageref.Parse("127.0.0.1:5000/counter:abc@sha256:" + strings.Repeat("a", 64))
	r := New(env, imageref.Image{Ref: ref}, "", "${evil}", configstore.New(nil, ""))
	vars := r.Variables()
	for _, want := range []string{
		`job_name = "counter-dev"`,
		`datacenters = ["dc1", "dc2"]`,
		`image = "127.0.0.1:5000/counter@sha256:` + strings.Repeat("a", 64) + `"`,
		`config_path = "counter/releases/default/counter-dev/` + r.ConfigHash() + `"`,
		"canary = 1",
		"auto_revert = true",
		`release_submitted_by = "$${evil}"`,
	} {
		if !strings.Contains(vars, want) {
			t.Errorf("variables lack %q:\n%s", want, vars)
		}
	}
}

func TestNewDerivesTheConfigItsHashAndItsPath(t *testing.T) {
	parse := func(t *testing.T, job, host string, port int) *environment.Environment {
		t.Helper()
		src := fmt.Sprintf("job = %q\ndatacenters = [\"dc1\"]\nconfig {\n  HOST = %q\n  PORT = %d\n}\n", job, host, port)
		env, err := environment.Parse("prod.hcl", "prod", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	store := configstore.New(nil, "team/releases")
	tests := []struct {
		name       string
		job, host  string
		port       int
		wantConfig map[string]string
	}{
		{"the environment's config", "counter-prod", "redis_db_prod", 6379, map[string]string{"HOST": "redis_db_prod", "PORT": "6379"}},
		{"another port", "counter-prod", "redis_db_prod", 6380, map[string]string{"HOST": "redis_db_prod", "PORT": "6380"}},
		{"another job", "shop", "127.0.0.1", 1, map[string]string{"HOST": "127.0.0.1", "PORT": "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(parse(t, tt.job, tt.host, tt.port), imageref.Image{}, "abc", "me", store)
			if got := r.Config(); !maps.Equal(got, tt.wantConfig) {
				t.Errorf("Config() = %v, want %v", got, tt.wantConfig)
			}
			if got, want := r.ConfigHash(), configstore.Hash(tt.wantConfig); got != want {
				t.Errorf("ConfigHash() = %s, want the hash of the config, %s", got, want)
			}
			if got, want := r.ConfigPath(), store.Path("default", tt.job, r.ConfigHash()); got != want {
				t.Errorf("ConfigPath() = %s, want the store's path %s", got, want)
			}
			meta := r.Meta()
			if meta[MetaConfigHash] != r.ConfigHash() || meta[MetaConfigPath] != r.ConfigPath() {
				t.Errorf("meta disagrees with the release: %v", meta)
			}
			r.Config()["HOST"] = "changed"
			if r.Config()["HOST"] != tt.host {
				t.Error("a caller changed the release's config through Config()")
			}
		})
	}
}

func TestDescriptionIsPlainText(t *testing.T) {
	env, err := environment.Parse("prod.hcl", "prod", []byte("datacenters = [\"dc1\"]\nconfig {\n  HOST = \"r\"\n  PORT = 1\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := imageref.Parse("127.0.0.1:5000/counter:abc@sha256:" + strings.Repeat("b", 64))
	d := New(env, imageref.Image{Ref: ref}, "0123456789ab", "me", configstore.New(nil, "")).Description()
	for _, markup := range []string{"**", "`", "__"} {
		if strings.Contains(d, markup) {
			t.Errorf("description has Markdown %q, which the Versions page shows raw: %s", markup, d)
		}
	}
	if !strings.HasPrefix(d, "prod release of 127.0.0.1:5000/counter@sha256:bbbb") || !strings.Contains(d, "commit 0123456789ab") {
		t.Errorf("description = %q", d)
	}
}

// TestVariablesFollowTheAnalysisBlock checks what render, plan and submit
// register: the job's auto_promote is the environment's, off whenever the
// deployer judges the canary, and a rollback's recorded variables read it
// back as it ran.
func TestVariablesFollowTheAnalysisBlock(t *testing.T) {
	tests := []struct {
		name, block string
		want        string
	}{
		{"promotes/without an analysis block", "", "auto_promote = true"},
		{"holds the canary/with an analysis block", "analysis {}", "auto_promote = false"},
		{"holds the canary/with a latency rule only", "analysis {\n  errors = false\n  latency {\n    threshold = \"25ms\"\n  }\n}", "auto_promote = false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := environment.Parse("prod.hcl", "prod", []byte("datacenters = [\"dc1\"]\nconfig {\n  HOST = \"redis\"\n  PORT = 6379\n}\n"+tt.block+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			ref, _ := imageref.Parse("127.0.0.1:5000/counter:abc@sha256:" + strings.Repeat("a", 64))
			r := New(env, imageref.Image{Ref: ref}, "", "me", configstore.New(nil, ""))
			vars := r.Variables()
			if !strings.Contains(vars, tt.want) {
				t.Fatalf("variables lack %q:\n%s", tt.want, vars)
			}
			back, err := FromVariables(vars, configstore.New(nil, ""))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := *back.Env.Update.AutoPromote, *env.Update.AutoPromote; got != want {
				t.Errorf("read back auto_promote = %t, want %t", got, want)
			}
		})
	}
}
