package release

import (
	"strings"
	"testing"

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
	r := &Release{
		Env: env, Image: imageref.Image{Ref: ref}, ConfigHash: "h", ConfigPath: "counter/releases/default/counter-dev/h",
		SubmittedBy: "${evil}",
	}
	vars := r.Variables()
	for _, want := range []string{
		`job_name = "counter-dev"`,
		`datacenters = ["dc1", "dc2"]`,
		`image = "127.0.0.1:5000/counter@sha256:` + strings.Repeat("a", 64) + `"`,
		`config_path = "counter/releases/default/counter-dev/h"`,
		"canary = 1",
		"auto_revert = true",
		`release_submitted_by = "$${evil}"`,
	} {
		if !strings.Contains(vars, want) {
			t.Errorf("variables lack %q:\n%s", want, vars)
		}
	}
}
