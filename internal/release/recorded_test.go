package release

import (
	"maps"
	"strings"
	"testing"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/imageref"
)

func TestFromVariablesReadsBackTheRelease(t *testing.T) {
	env, err := environment.Parse("prod.hcl", "prod", []byte(`
datacenters = ["dc1", "dc2"]
count = 3
config {
  HOST = "redis_db_prod"
  PORT = 6380
}
resources {
  memory = 64
}
update {
  canary = 2
  min_healthy_time = "7s"
}
`))
	if err != nil {
		t.Fatal(err)
	}
	store := configstore.New(nil, "team/releases")
	ref, _ := imageref.Parse("127.0.0.1:5000/counter:abc@sha256:" + strings.Repeat("c", 64))
	orig := New(env, imageref.Image{Ref: ref}, "0123456789ab", "${someone}", store)
	repaired, err := orig.WithSnapshot(configstore.RepairName(orig.ConfigHash(), 2), store)
	if err != nil {
		t.Fatal(err)
	}
	vars := orig.Variables()
	promoted := *orig
	promoted.PromotedFrom = "test v7"
	promoted.Hosts = []string{"redis_db_prod:127.0.0.3"}

	tests := []struct {
		name    string
		vars    string
		want    *Release // nil: refused
		wantErr string
	}{
		{"a release's variables", vars, orig, ""},
		{"a repaired release's", repaired.Variables(), repaired, ""},
		{"a promoted release's", promoted.Variables(), &promoted, ""},
		{"no config recorded", cut(t, vars, "config = {"), nil, "hold no config"},
		{"config unlike its hash", strings.Replace(vars, `"PORT" = "6380"`, `"PORT" = "6381"`, 1), nil, "does not hold config"},
		{"port not a number", strings.Replace(vars, `"PORT" = "6380"`, `"PORT" = "x"`, 1), nil, `PORT "x" is not a number`},
		{"a variable this deployer does not write", vars + "extra = 1\n", nil, "cannot be restored exactly"},
		{"another way of writing them", strings.Replace(vars, "count = 3", "count = 3.0", 1), nil, "cannot be restored exactly"},
		{"not HCL", vars + "config = {", nil, "read the recorded variables"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromVariables(tt.vars, store)
			if tt.want == nil {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FromVariables: %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got.Config(), tt.want.Config()) || got.ConfigPath() != tt.want.ConfigPath() ||
				got.Image != tt.want.Image || got.SubmittedBy != tt.want.SubmittedBy || got.PromotedFrom != tt.want.PromotedFrom ||
				got.Variables() != tt.want.Variables() {
				t.Errorf("FromVariables gave\n%s\nwant\n%s", got.Variables(), tt.want.Variables())
			}
		})
	}
}

// cut removes the block that starts at the line beginning with start.
func cut(t *testing.T, s, start string) string {
	t.Helper()
	i := strings.Index(s, start)
	if i < 0 {
		t.Fatalf("no %q in %s", start, s)
	}
	j := strings.Index(s[i:], "}\n")
	return s[:i] + s[i+j+2:]
}
