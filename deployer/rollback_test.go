package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/welcome"
)

// released is one release a test made, and what its app must show.
type released struct {
	rec   deploy.Record
	redis *redistest.Server
}

// count GETs the release's app and returns the body.
func (f *fixture) count(r released) string {
	f.t.Helper()
	_, body := get(f.t, f.appURL(r.rec.ConfigHash)+"/")
	return body
}

// wantRunning checks that the job's newest version runs r's image and its
// app counts in r's Redis.
func (f *fixture) wantRunning(r released, how string) {
	f.t.Helper()
	vs := f.versions()
	if img := vs[0].TaskGroups[0].Tasks[0].Config["image"]; img != r.rec.Image {
		f.t.Errorf("%s: job runs %v, want %s's image %s", how, img, r.rec.Release, r.rec.Image)
	}
	before, _ := r.redis.Get("visitorCount")
	n, _ := strconv.Atoi(before)
	want := welcome.Prefix + strconv.Itoa(n+1)
	if got := f.count(r); got != want {
		f.t.Errorf("%s: app answered %q, want %q from %s's Redis", how, got, want, r.rec.Release)
	}
}

func (f *fixture) historyJSON() []deploy.Entry {
	f.t.Helper()
	out, _, code := f.deployer("history", "-env", "dev", "-json")
	if code != exitOK {
		f.t.Fatalf("history: exit %d", code)
	}
	var entries []deploy.Entry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		f.t.Fatal(err)
	}
	return entries
}

func TestRevertBringsBackImageAndConfig(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var rs []released
	for i := range 3 {
		img := imageVariant(t, f.stack, i)
		rdb := redistest.Start(t)
		if err := rdb.Set("visitorCount", strconv.Itoa(100*(i+1))); err != nil {
			t.Fatal(err)
		}
		f.writeEnv("dev", rdb, 1, "")
		rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", img)
		if code != exitOK || rec.Release != "v"+strconv.Itoa(i) {
			t.Fatalf("release %d: exit %d, %+v", i, code, rec)
		}
		rs = append(rs, released{rec, rdb})
	}
	f.wantRunning(rs[2], "after three releases")

	// History shows what each release changed.
	{
		entries := f.historyJSON()
		if len(entries) != 3 || !entries[0].Current || entries[0].Release != "v2" {
			t.Fatalf("history %+v, want v2 (current), v1, v0", entries)
		}
		for i, e := range entries {
			r := rs[2-i].rec
			if e.Image != r.Image || e.ConfigHash != r.ConfigHash || e.SubmittedBy != "tester" || !e.ByDeployer {
				t.Errorf("entry %s = %+v, want image %s config %s", e.Release, e, r.Image, r.ConfigHash)
			}
		}
		for i := range 2 {
			older, newer := rs[1-i], rs[2-i]
			want := map[string]deploy.Change{
				"image": {Kind: "image", Field: "image", Old: older.rec.Image, New: newer.rec.Image},
				"PORT":  {Kind: "config", Field: "PORT", Old: strconv.Itoa(older.redis.Port), New: strconv.Itoa(newer.redis.Port)},
			}
			got := map[string]deploy.Change{}
			for _, c := range entries[i].Changes {
				got[c.Field] = c
			}
			for k, w := range want {
				if got[k] != w {
					t.Errorf("%s: change %s = %+v, want %+v (all: %+v)", entries[i].Release, k, got[k], w, entries[i].Changes)
				}
			}
			if _, ok := got["HOST"]; ok {
				t.Errorf("%s: HOST did not change, history says %+v", entries[i].Release, got["HOST"])
			}
		}
		if len(entries[2].Changes) != 0 {
			t.Errorf("v0 has no predecessor, history says %+v", entries[2].Changes)
		}
		text, _, _ := f.deployer("history", "-env", "dev")
		t.Logf("history:\n%s", text)
		if !strings.Contains(text, `config PORT "`+strconv.Itoa(rs[1].redis.Port)+`" -> "`+strconv.Itoa(rs[2].redis.Port)+`"`) {
			t.Errorf("history text lacks v2's PORT change:\n%s", text)
		}
	}

	// The real nomad CLI, by tag name: code and config come back.
	if _, code := f.nomadCLI("job", "revert", "-detach", f.job, "v0"); code != 0 {
		t.Fatalf("nomad job revert %s v0: exit %d", f.job, code)
	}
	f.wantRunning(rs[0], "after nomad job revert v0")

	// The deployer, by version number. The revert above was detached, so
	// its deployment may still run: a rollback waits for it rather than
	// cancel it.
	if rec, code, _ := f.rollbackJSON("-to-version", "1", "-wait", "1m"); code != exitOK || rec.Outcome != deploy.Succeeded {
		t.Fatalf("rollback -to-version 1: exit %d %+v", code, rec)
	}
	f.wantRunning(rs[1], "after deployer rollback -to-version 1")

	// The deployer, by tag name.
	if rec, code, _ := f.rollbackJSON("-to", "v2"); code != exitOK || rec.Outcome != deploy.Succeeded {
		t.Fatalf("rollback -to v2: exit %d %+v", code, rec)
	}
	f.wantRunning(rs[2], "after deployer rollback -to v2")

	// Rolling back to what runs changes nothing.
	{
		n := len(f.versions())
		rec, code, _ := f.rollbackJSON("-to", "v2")
		if code != exitOK || rec.Outcome != deploy.NoChange {
			t.Errorf("rollback to the running release: exit %d outcome %q, want 0 no-change", code, rec.Outcome)
		}
		if len(rec.URLs) == 0 {
			t.Error("rollback to the running release named no address it runs at")
		}
		if len(f.versions()) != n {
			t.Errorf("versions %d -> %d", n, len(f.versions()))
		}
	}

	// Status shows no drift.
	{
		out, _, code := f.deployer("status", "-env", "dev")
		if code != exitOK || !strings.Contains(out, "Drift:        none") {
			t.Errorf("status: exit %d\n%s", code, out)
		}
	}

	// Rollback to a release whose snapshot is gone restores the config
	// Nomad recorded with it, as a new version.
	{
		if _, err := f.kv.KV().DeleteTree(rs[0].rec.ConfigPath+"/", nil); err != nil {
			t.Fatal(err)
		}
		n := len(f.versions())
		rec, code, stderr := f.rollbackJSON("-to", "v0")
		if code != exitOK || rec.Outcome != deploy.Succeeded || !strings.Contains(rec.Repair, rs[0].rec.ConfigPath+" of v0 was deleted") {
			t.Fatalf("rollback to v0 without its snapshot: exit %d outcome %q repair %q, want 0, succeeded, the deletion named\n%s", code, rec.Outcome, rec.Repair, stderr)
		}
		if rec.Image != rs[0].rec.Image || rec.ConfigHash != rs[0].rec.ConfigHash || len(f.versions()) != n+1 {
			t.Errorf("restored %s with config %s, %d new versions; want v0's %s and %s, one new version",
				rec.Image, rec.ConfigHash, len(f.versions())-n, rs[0].rec.Image, rs[0].rec.ConfigHash)
		}
		if values := f.snapshot(rec.ConfigPath); values["PORT"] != strconv.Itoa(rs[0].redis.Port) || values["HOST"] != rs[0].redis.Host {
			t.Errorf("the restored snapshot %s holds %v, want v0's config", rec.ConfigPath, values)
		}
		f.wantRunning(rs[0], "after the rollback that restored v0's config")
		if rec, code, _ := f.rollbackJSON("-to", "v2"); code != exitOK || rec.Outcome != deploy.Succeeded {
			t.Fatalf("rollback -to v2: exit %d %+v", code, rec)
		}
	}

	// Status reports a hand-edited snapshot, and a rollback to the running
	// release repairs it.
	{
		key := rs[2].rec.ConfigPath + "/PORT"
		if _, err := f.kv.KV().Put(&consul.KVPair{Key: key, Value: []byte("6390")}, nil); err != nil {
			t.Fatal(err)
		}
		out, _, code := f.deployer("status", "-env", "dev")
		if code != exitDrift || !strings.Contains(out, rs[2].rec.ConfigPath+" was edited by hand") {
			t.Errorf("status: exit %d, want %d and the edited snapshot named:\n%s", code, exitDrift, out)
		}
		rec, code, stderr := f.rollbackJSON("-to", "v2")
		if code != exitOK || rec.Outcome != deploy.Succeeded || !strings.Contains(rec.Repair, "was edited by hand") || rec.ConfigPath == rs[2].rec.ConfigPath {
			t.Fatalf("rollback to the running, edited release: exit %d outcome %q repair %q at %s; want a new version at a fresh path\n%s",
				code, rec.Outcome, rec.Repair, rec.ConfigPath, stderr)
		}
		if out, _, code := f.deployer("status", "-env", "dev"); code != exitOK {
			t.Errorf("status after the repair: exit %d\n%s", code, out)
		}
		f.wantRunning(rs[2], "after the rollback that repaired v2's config")
	}

	// Status reports a hand-run nomad job run.
	{
		out, _, code := f.deployer("render", "-env", "dev", "-image", rs[2].rec.Image)
		if code != exitOK {
			t.Fatalf("render: exit %d", code)
		}
		var doc map[string]map[string]any
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatal(err)
		}
		delete(doc["Job"], "Meta")
		file := filepath.Join(t.TempDir(), "job.json")
		b, _ := json.Marshal(doc)
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, code := f.nomadCLI("job", "run", "-detach", "-json", file); code != 0 {
			t.Fatalf("nomad job run: exit %d", code)
		}
		out, _, code = f.deployer("status", "-env", "dev", "-json")
		var st deploy.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		if code != exitDrift || len(st.Drift) != 1 || !strings.Contains(st.Drift[0], "not made by the deployer") {
			t.Errorf("status: exit %d drift %q, want %d and a hand-made version", code, st.Drift, exitDrift)
		}
	}
}

func (f *fixture) rollbackJSON(args ...string) (deploy.Record, int, string) {
	f.t.Helper()
	out, stderr, code := f.deployer(append([]string{"rollback", "-env", "dev", "-json"}, args...)...)
	var rec deploy.Record
	if out != "" {
		if err := json.Unmarshal([]byte(out), &rec); err != nil {
			f.t.Fatalf("rollback -json printed %q: %v", out, err)
		}
	}
	return rec, code, stderr
}

// TestRollbackBringsBackWhatTheEnvironmentSet: a release is the image and
// everything the environment file renders into the job, so going back to
// v0 brings back v0's count, not only its image and config (issue 22).
func TestRollbackBringsBackWhatTheEnvironmentSet(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	img, _ := releaseImages(t, f.stack)
	rdb := redistest.Start(t)
	for i, count := range []int{1, 2} {
		f.writeEnv("dev", rdb, count, "")
		if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", img); code != exitOK || rec.Release != "v"+strconv.Itoa(i) {
			t.Fatalf("release with count %d: exit %d, %+v", count, code, rec)
		}
	}
	if n := f.running(); n != 2 {
		t.Fatalf("v1 runs %d instances, want 2", n)
	}

	// History does not call v1 the same release as v0.
	if e := f.historyJSON()[0]; e.SameAs != "" {
		t.Errorf("history calls v1 the same release as %s: %+v", e.SameAs, e)
	}

	// Back to v0: one instance, and the rollback says what it undid.
	out, stderr, code := f.deployer("rollback", "-env", "dev", "-json", "-to", "v0")
	var got struct {
		deploy.Record
		Undoes []map[string]string `json:"undoes"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("rollback -json printed %q: %v", out, err)
	}
	if code != exitOK || got.Outcome != deploy.Succeeded {
		t.Fatalf("rollback -to v0: exit %d outcome %q, want 0 succeeded\n%s", code, got.Outcome, out)
	}
	if c := *f.versions()[0].TaskGroups[0].Count; c != 1 {
		t.Errorf("after rollback -to v0 the job's count is %d, want v0's 1", c)
	}
	if n := f.running(); n != 1 {
		t.Errorf("after rollback -to v0 %d instances run, want 1", n)
	}
	if !strings.Contains(stderr, "count 2 -> 1") {
		t.Errorf("rollback -to v0 did not say it undoes count 2 -> 1:\n%s", stderr)
	}
	if len(got.Undoes) != 1 || got.Undoes[0]["field"] != "count" || got.Undoes[0]["from"] != "2" || got.Undoes[0]["to"] != "1" {
		t.Errorf("rollback -json undoes %v, want count 2 -> 1", got.Undoes)
	}

	// Now v0 runs again: a second rollback to it changes nothing.
	if rec, code, _ := f.rollbackJSON("-to", "v0"); code != exitOK || rec.Outcome != deploy.NoChange {
		t.Errorf("rollback -to v0 again: exit %d outcome %q, want 0 no-change", code, rec.Outcome)
	}

	// The default goes back before the release that runs, v0, which the
	// rollback brought back: v1 was gone back from, and going to it would
	// undo the rollback (issue 23; it did, as version 3). None is older
	// than v0, so it refuses and makes nothing. (That the default counts a
	// count-only difference, TestPickCountsTheEnvironmentsValues shows.)
	before := len(f.versions())
	_, code, stderr = f.rollbackJSON()
	if code != exitError || !strings.Contains(stderr, "no stable release older than v0") {
		t.Errorf("rollback after a rollback to v0: exit %d, want 1 and no release older than v0\n%s", code, stderr)
	}
	if n := len(f.versions()); n != before {
		t.Errorf("a refused rollback made %d versions", n-before)
	}
}

// running counts the current version's allocations that Nomad means to
// keep running.
func (f *fixture) running() int {
	f.t.Helper()
	v := *f.versions()[0].Version
	allocs, _, err := f.nomad.Jobs().Allocations(f.job, false, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	for _, a := range allocs {
		if a.JobVersion == v && a.DesiredStatus == "run" && a.ClientStatus == "running" {
			n++
		}
	}
	return n
}
