package localstack

import (
	"strings"
	"testing"
)

// The servers' job_tracked_versions is written out, never left to Nomad's
// default: it bounds how far back a rollback can restore a config from a
// job submission (docs/stack.md).
func TestNomadServerConfigSetsJobTrackedVersions(t *testing.T) {
	tests := []struct {
		name   string
		set    int
		agent  nomadAgent
		want   string
		absent bool
	}{
		{"writes the stack's value by default", 0, nomadAgent{bootstrap: 1}, "job_tracked_versions = 10", false},
		{"writes the value the config sets", 3, nomadAgent{bootstrap: 3}, "job_tracked_versions = 3", false},
		{"writes none for a client", 3, nomadAgent{cgroup: "c"}, "job_tracked_versions", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Stack{cfg: Config{JobTrackedVersions: tt.set}}
			got := s.nomadAgentConfig(tt.agent)
			if has := strings.Contains(got, tt.want); has == tt.absent {
				t.Errorf("config has %q: %v, want %v:\n%s", tt.want, has, !tt.absent, got)
			}
		})
	}
}
