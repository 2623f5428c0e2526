package deploy

import (
	"strings"
	"testing"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/release"
)

// canaried is version with a canary whose promotion is automatic or not.
func canaried(n uint64, image, hash string, stable bool, autoPromote bool) *nomad.Job {
	j := version(n, image, hash, stable, release.Name(n))
	j.TaskGroups[0].Update = &nomad.UpdateStrategy{Canary: ptr(1), AutoPromote: ptr(autoPromote)}
	return j
}

func TestJudgedCopies(t *testing.T) {
	// Newest first: A (v1) and B (v3), each judged and copied with
	// auto_promote on (v2, v4); v5 is a copy of B that never turned stable.
	a, aCopy := canaried(1, "app@sha256:a", "ha", true, false), canaried(2, "app@sha256:a", "ha", true, true)
	b, bCopy := canaried(3, "app@sha256:b", "hb", true, false), canaried(4, "app@sha256:b", "hb", true, true)
	versions := []*nomad.Job{bCopy, b, aCopy, a, version(0, "app@sha256:z", "hz", true, "v0")}

	t.Run("rollback/without -to skips the release whose copy runs, and picks the other's copy", func(t *testing.T) {
		got, err := pick(versions, Target{})
		if err != nil {
			t.Fatal(err)
		}
		if *got.Version != 2 {
			t.Errorf("pick = version %d, want 2", *got.Version)
		}
	})
	// A version that differs from an older one in auto_promote alone is
	// no copy when the older one never waited for a promotion.
	plain, again := canaried(7, "app@sha256:c", "hc", true, true), canaried(8, "app@sha256:c", "hc", true, false)
	copyOf, releaseOf := judgedCopyOf, judgedReleaseOf
	finds := []struct {
		name   string
		find   func([]*nomad.Job, *nomad.Job) *nomad.Job
		of     *nomad.Job
		within []*nomad.Job
		want   *nomad.Job
	}{
		{"copy/of A is v2", copyOf, a, versions, aCopy},
		{"copy/of B is v4", copyOf, b, versions, bCopy},
		{"copy/of a copy is none", copyOf, aCopy, versions, nil},
		{"copy/older than its release is none", copyOf, b, versions[1:], nil},
		{"copy/that never turned stable is none", copyOf, b, append([]*nomad.Job{canaried(5, "app@sha256:b", "hb", false, true)}, versions[1:]...), nil},
		{"copy/of another release is none", copyOf, a, []*nomad.Job{bCopy, a}, nil},
		{"release/of A's copy is A", releaseOf, aCopy, versions, a},
		{"release/of B's copy is B", releaseOf, bCopy, versions, b},
		{"release/of a release is none", releaseOf, b, versions, nil},
		{"release/of a version whose older twin waits for no promotion is none", releaseOf, again, []*nomad.Job{again, plain}, nil},
	}
	for _, tt := range finds {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.find(tt.within, tt.of); got != tt.want {
				t.Errorf("%s of v%d = %s, want %s", strings.SplitN(tt.name, "/", 2)[0], *tt.of.Version, name(got), name(tt.want))
			}
		})
	}
	t.Run("history/names each copy's release", func(t *testing.T) {
		want := map[uint64]string{4: "v3", 2: "v1"}
		for _, e := range historyEntries(versions, nil, nil) {
			if e.JudgedCopyOf != want[e.Version] {
				t.Errorf("%s: judged copy of %q, want %q", e.Release, e.JudgedCopyOf, want[e.Version])
			}
		}
	})
}

func name(v *nomad.Job) string {
	if v == nil {
		return "none"
	}
	return releaseName(v)
}

func TestWhichReleasesGetACopy(t *testing.T) {
	analysis := &judging{env: "prod", analysis: &environment.Analysis{}}
	manual := &judging{env: "stage"}
	tests := []struct {
		name string
		rec  Record
		want bool
	}{
		{"canary promoted by the analysis", Record{Analysis: &AnalysisReport{Verdict: Promote, Reason: "errors: ..."}, judging: analysis}, true},
		{"rollback's canary promoted as judged before", Record{Analysis: &AnalysisReport{Verdict: Promote, Reason: "the rollback goes back to v0"}}, true},
		{"placed without a canary where an analysis judges", Record{judging: analysis}, true},
		{"placed without a canary where nothing judges", Record{judging: manual}, false},
		{"placed without a canary by a rollback to an unstable version", Record{}, false},
		{"canary failed by the analysis", Record{Analysis: &AnalysisReport{Verdict: Fail}, judging: analysis}, false},
		{"canary promoted by hand while the deployer judged", Record{Analysis: &AnalysisReport{Reason: "promoted outside the deployer"}, judging: analysis}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := copyReason(&tt.rec); (got != "") != tt.want {
				t.Errorf("copyReason = %q, want a copy: %v", got, tt.want)
			}
		})
	}
}
