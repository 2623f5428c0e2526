package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/release"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// TestHistoryBeyondNomadsTrackedVersions runs ten releases on a stack whose
// Nomad keeps 3 tracked versions (issue 22). The deployer tags each
// release and Nomad never prunes a tagged version, so all ten stay listed
// and rollback -to v0 brings back v0's image and config; but Nomad keeps
// the submissions of the newest 3 only, so a rollback that needs an older
// one (to restore a snapshot edited or deleted by hand) is refused, naming
// the limit, and writes nothing. promote -from dev@v0 needs no submission
// and works. gc leaves the job's snapshots exactly those the versions Nomad
// retains name, tagged or not, and only under the deploy lock.
func TestHistoryBeyondNomadsTrackedVersions(t *testing.T) {
	t.Parallel()
	const tracked, releases = 3, 10
	s := stacktest.StartOwn(t, stacktest.TrackedVersions(tracked))
	nomadRules, consulRules := stacktest.DeployerPolicies(t)
	if err := s.DeployerTokens(t.Context(), nomadRules, consulRules); err != nil {
		t.Fatal(err)
	}
	stacktest.Secret(t, s, "own stack's deployer's Nomad token", s.DeployerNomadToken)
	stacktest.Secret(t, s, "own stack's deployer's Consul token", s.DeployerConsulToken)
	f := fixtureOn(t, s)
	store := configstore.New(f.kv, "")
	first, later := imageVariant(t, s, 1), imageVariant(t, s, 2)

	// Each release its own Redis, so its config is its own and the app
	// shows which config runs.
	rs := make([]released, 0, releases)
	for i := range releases {
		rdb := redistest.Start(t)
		f.writeEnv("dev", rdb, 1, "")
		image := later
		if i == 0 {
			image = first
		}
		rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", image, "-wait", "2m")
		if code != exitOK || rec.Outcome != deploy.Succeeded {
			t.Fatalf("release %d: exit %d outcome %q", i, code, rec.Outcome)
		}
		rs = append(rs, released{rec: rec, redis: rdb})
	}

	// Nomad kept every version (each is tagged) but the submissions of
	// the newest 3 only: the stack's limit is in force.
	vs := f.versions()
	if len(vs) != releases {
		t.Fatalf("Nomad keeps %d versions of %d tagged releases, want all", len(vs), releases)
	}
	for _, v := range vs {
		if v.VersionTag == nil {
			t.Errorf("version %d has no tag", *v.Version)
		}
		if kept, want := f.hasSubmission(*v.Version), *v.Version >= releases-tracked; kept != want {
			t.Errorf("version %d: Nomad keeps its submission: %v, want %v (job_tracked_versions = %d)", *v.Version, kept, want, tracked)
		}
	}

	if b, err := json.Marshal(vs[0]); err == nil {
		sub, _, _ := f.nomad.Jobs().Submission(f.job, int(*vs[0].Version), nil)
		t.Logf("what Nomad keeps of a release: the version %d bytes as JSON, the submission %d bytes of source and %d of variables", len(b), len(sub.Source), len(sub.Variables))
	}

	// A rollback that must restore a drifted snapshot from a pruned
	// submission is refused before anything is written.
	drifts := []struct {
		name  string
		v     int
		drift func(path string)
		says  string
	}{
		{"edited snapshot", 1, func(path string) {
			f.putKey(path+"/PORT", "1")
		}, "was edited by hand"},
		{"deleted snapshot", 2, func(path string) {
			if _, err := f.kv.KV().DeleteTree(path+"/", nil); err != nil {
				t.Fatal(err)
			}
		}, "was deleted"},
	}
	for _, tt := range drifts {
		t.Run("refuses/"+tt.name, func(t *testing.T) {
			r := rs[tt.v]
			values := f.snapshot(r.rec.ConfigPath)
			tt.drift(r.rec.ConfigPath)
			before, snaps := f.versions(), f.snapshots()
			_, stderr, code := f.deployer("rollback", "-env", "dev", "-to", release.Name(uint64(tt.v)))
			if code != exitError {
				t.Errorf("rollback -to v%d past the kept submissions: exit %d, want %d", tt.v, code, exitError)
			}
			for _, want := range []string{
				tt.says,
				fmt.Sprintf("no longer keeps the submission (job source and variables) of version %d", tt.v),
				"job_tracked_versions",
				"deployer submit -env dev -image " + r.rec.Image,
				"nothing was changed",
			} {
				if !strings.Contains(stderr, want) {
					t.Errorf("the refusal does not say %q:\n%s", want, stderr)
				}
			}
			after := f.versions()
			if len(after) != len(before) || *after[0].Version != *before[0].Version {
				t.Errorf("the refused rollback left %d versions (newest %d), had %d (newest %d)", len(after), *after[0].Version, len(before), *before[0].Version)
			}
			if got := f.snapshots(); !slices.Equal(got, snaps) {
				t.Errorf("the refused rollback changed the snapshots: %v, had %v", got, snaps)
			}
			if p, _, err := f.kv.KV().Get(f.lockKey(), nil); err != nil || (p != nil && p.Session != "") {
				t.Errorf("the deploy lock after the refused rollback: %+v, %v; want it free", p, err)
			}
			f.wantRunning(rs[releases-1], "after the refused rollback")
			// Put it back as released, for gc's check below.
			if _, err := f.kv.KV().DeleteTree(r.rec.ConfigPath+"/", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := store.Put(t.Context(), r.rec.ConfigPath, values); err != nil {
				t.Fatal(err)
			}
		})
	}

	// Promoting the oldest release carries its build from its meta: no
	// submission needed.
	t.Run("promotes the oldest release", func(t *testing.T) {
		job := f.otherJob("counter-test")
		f.writeEnvJob("test", job, redistest.Start(t), 1, "")
		rec, code, stderr := f.promote("-from", "dev@v0", "-env", "test")
		if code != exitOK || rec.Outcome != deploy.Succeeded || rec.ImageDigest != rs[0].rec.ImageDigest {
			t.Errorf("promote -from dev@v0: exit %d outcome %q digest %s, want v0's %s\n%s", code, rec.Outcome, rec.ImageDigest, rs[0].rec.ImageDigest, stderr)
		}
	})

	// The oldest tagged release is reverted to whole: its image and the
	// config its snapshot holds.
	rec, code, stderr := f.rollbackJSON("-to", "v0")
	if code != exitOK || rec.Outcome != deploy.Succeeded {
		t.Fatalf("rollback -to v0: exit %d outcome %q\n%s", code, rec.Outcome, stderr)
	}
	if rec.Image != rs[0].rec.Image || rec.ConfigHash != rs[0].rec.ConfigHash {
		t.Errorf("rollback -to v0 runs %s with config %s, want v0's %s with %s", rec.Image, rec.ConfigHash, rs[0].rec.Image, rs[0].rec.ConfigHash)
	}
	f.wantRunning(rs[0], "after rollback -to v0")

	// gc: a snapshot no version names (as a deployer killed between
	// writing it and registering leaves) goes; while another holds the
	// deploy lock, gc is a conflict that changes nothing.
	orphan := store.Path("default", f.job, configstore.Hash(map[string]string{"HOST": "127.0.0.1", "PORT": "60000"}))
	if _, err := store.Put(t.Context(), orphan, map[string]string{"HOST": "127.0.0.1", "PORT": "60000"}); err != nil {
		t.Fatal(err)
	}
	t.Run("gc waits for no lock", func(t *testing.T) {
		unlock, _, err := store.Lock(t.Context(), "default", f.job, "a test, holding it")
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		snaps := f.snapshots()
		if _, _, code := f.deployer("gc", "-env", "dev", "-keep", "3"); code != exitConflict {
			t.Errorf("gc while the lock is held: exit %d, want %d", code, exitConflict)
		}
		if got := f.snapshots(); !slices.Equal(got, snaps) {
			t.Errorf("gc without the lock changed the snapshots: %v, had %v", got, snaps)
		}
		for _, v := range f.versions() {
			if v.VersionTag == nil {
				t.Errorf("gc without the lock untagged version %d", *v.Version)
			}
		}
	})

	// -keep 3 untags all but the newest 3 versions, and Nomad applies its
	// limit as each tag goes: of the untagged, it keeps the newest 3.
	all := f.versions()
	res := f.gc("-keep", "3")
	var wantUntagged []string
	for _, v := range all[3:] {
		wantUntagged = append(wantUntagged, v.VersionTag.Name)
	}
	if !slices.Equal(res.Untagged, wantUntagged) {
		t.Errorf("gc -keep 3 untagged %v, want %v", res.Untagged, wantUntagged)
	}
	pruned, wantDeleted := f.prunedSince(all)
	t.Logf("gc -keep 3 let Nomad drop versions %v", pruned)
	if len(pruned) == 0 {
		t.Errorf("Nomad dropped no untagged version over job_tracked_versions = %d", tracked)
	}
	if wantDeleted = append(wantDeleted, orphan); !slices.Equal(res.Deleted, sorted(wantDeleted)) {
		t.Errorf("gc -keep 3 deleted %v, want the orphan and the snapshots of the versions Nomad dropped: %v", res.Deleted, sorted(wantDeleted))
	}
	f.wantSnapshotsOfRetained("after gc -keep 3")

	// A new version makes Nomad drop one more untagged version; the next
	// gc deletes its snapshot.
	all = f.versions()
	for range 2 {
		rdb := redistest.Start(t)
		f.writeEnv("dev", rdb, 1, "")
		if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", later, "-wait", "2m"); code != exitOK {
			t.Fatalf("release after gc: exit %d outcome %q", code, rec.Outcome)
		}
	}
	pruned, wantDeleted = f.prunedSince(all)
	t.Logf("2 more releases let Nomad drop versions %v", pruned)
	if len(pruned) == 0 {
		t.Errorf("Nomad dropped no untagged version when 2 more were registered (job_tracked_versions = %d)", tracked)
	}
	if res := f.gc(); !slices.Equal(res.Deleted, sorted(wantDeleted)) {
		t.Errorf("gc deleted %v, want the snapshots of the versions Nomad dropped, %v: %v", res.Deleted, pruned, sorted(wantDeleted))
	}
	f.wantSnapshotsOfRetained("after Nomad pruned versions and gc ran")
}

// Nomad registers a job whose source and variables are over its
// job_max_source_size (1 MB by default) but drops its submission, with
// only a warning: submit says so, since a rollback then cannot restore
// that release's config from Nomad (issue 22).
func TestSubmitSaysWhenNomadDropsTheSubmission(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	f.writeEnv("dev", redistest.Start(t), 1, "")
	spec := filepath.Join(f.dir, "jobs", "counter.nomad.hcl")
	b, err := os.ReadFile(spec)
	if err != nil {
		t.Fatal(err)
	}
	// A comment is source too: over 1 MB of it, and the job is the same.
	big := append(b, []byte("\n# "+strings.Repeat("x", 1<<20)+"\n")...)
	if err := os.WriteFile(spec, big, 0o644); err != nil {
		t.Fatal(err)
	}
	rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good)
	if code != exitOK || rec.Outcome != deploy.Succeeded {
		t.Fatalf("submit of a source over 1 MB: exit %d outcome %q", code, rec.Outcome)
	}
	if f.hasSubmission(*rec.Version) {
		t.Fatalf("Nomad kept the submission of a source over 1 MB: nothing to warn of")
	}
	for _, want := range []string{"will be discarded", "Nomad keeps no submission of v0 (its job_max_source_size)"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("submit does not say %q:\n%.2000s", want, stderr)
		}
	}
	// -json carries Nomad's warning too (issue 23).
	if len(rec.Warnings) != 1 || !strings.Contains(rec.Warnings[0], "will be discarded") {
		t.Errorf("-json warnings %q, want Nomad's one about the source size", rec.Warnings)
	}
}

// prunedSince returns the versions of before that Nomad no longer keeps,
// and the snapshots only they named.
func (f *fixture) prunedSince(before []*nomad.Job) (pruned []uint64, only []string) {
	f.t.Helper()
	used := map[string]bool{}
	retained := map[uint64]bool{}
	for _, v := range f.versions() {
		retained[*v.Version] = true
		used[v.Meta[release.MetaConfigPath]] = true
	}
	for _, v := range before {
		if retained[*v.Version] {
			continue
		}
		pruned = append(pruned, *v.Version)
		if p := v.Meta[release.MetaConfigPath]; !used[p] && !slices.Contains(only, p) {
			only = append(only, p)
		}
	}
	return pruned, only
}

// sorted returns a sorted copy of s, never nil.
func sorted(s []string) []string {
	return append([]string{}, slices.Sorted(slices.Values(s))...)
}

// hasSubmission says whether Nomad keeps the submission of version v.
func (f *fixture) hasSubmission(v uint64) bool {
	f.t.Helper()
	sub, _, err := f.nomad.Jobs().Submission(f.job, int(v), nil)
	if err != nil && !isNotFound(err) {
		f.t.Fatalf("submission of version %d of %s: %v", v, f.job, err)
	}
	return err == nil && sub != nil && sub.Source != ""
}

// putKey writes one key in Consul KV.
func (f *fixture) putKey(key, value string) {
	f.t.Helper()
	if _, err := f.kv.KV().Put(&consul.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		f.t.Fatal(err)
	}
}

// gc runs deployer gc -env dev -json with args and returns its result.
func (f *fixture) gc(args ...string) deploy.GCResult {
	f.t.Helper()
	out, stderr, code := f.deployer(append([]string{"gc", "-env", "dev", "-json"}, args...)...)
	var res deploy.GCResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitOK {
		f.t.Fatalf("gc %v: exit %d, %v\n%s", args, code, err, stderr)
	}
	return res
}

// wantSnapshotsOfRetained checks gc's invariant: the job's snapshots are
// exactly those the versions Nomad retains name, tagged or not, each as
// released.
func (f *fixture) wantSnapshotsOfRetained(when string) {
	f.t.Helper()
	store := configstore.New(f.kv, "")
	named := map[string]*nomad.Job{}
	for _, v := range f.versions() {
		if p := v.Meta[release.MetaConfigPath]; p != "" {
			named[p] = v
		}
	}
	var have []string
	for _, k := range f.snapshots() {
		have = append(have, strings.TrimSuffix(k, "/"))
	}
	want := slices.Sorted(maps.Keys(named))
	if !slices.Equal(have, want) {
		f.t.Errorf("%s: the snapshots are %v, want those the retained versions name: %v", when, have, want)
	}
	for p, v := range named {
		values, found, err := store.Get(f.t.Context(), p)
		if err != nil || !found || configstore.Hash(values) != v.Meta[release.MetaConfigHash] {
			f.t.Errorf("%s: version %d (tagged %v) names snapshot %s: found %v, hash %s, want %s (%v)",
				when, *v.Version, v.VersionTag != nil, p, found, configstore.Hash(values), v.Meta[release.MetaConfigHash], err)
		}
	}
}
