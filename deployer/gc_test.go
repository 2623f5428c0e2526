package main

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

func TestGCDeletesOnlyUnreferencedSnapshots(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	const releases = 10
	for i := range releases {
		f.writeEnv("dev", redistest.Start(t), 1, "")
		// Each waits for the deployment before it; only the last one is
		// watched.
		args := []string{"-env", "dev", "-image", good, "-wait", "2m"}
		if i < releases-1 {
			args = append(args, "-detach")
		}
		if rec, code, _ := submitJSON(t, f, args...); code != exitOK {
			t.Fatalf("release %d: exit %d %+v", i, code, rec)
		}
	}
	// Two snapshots no version refers to, as a deployer killed between
	// writing a snapshot and registering would leave.
	store := configstore.New(f.kv, "")
	var orphans []string
	for i := range 2 {
		values := map[string]string{"HOST": "127.0.0.1", "PORT": strconv.Itoa(60000 + i)}
		path := store.Path("default", f.job, configstore.Hash(values))
		if _, err := store.Put(t.Context(), path, values); err != nil {
			t.Fatal(err)
		}
		orphans = append(orphans, path)
	}

	out, _, code := f.deployer("gc", "-env", "dev", "-json")
	if code != exitOK {
		t.Fatalf("gc: exit %d", code)
	}
	var res deploy.GCResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	slices.Sort(orphans)
	if !slices.Equal(res.Deleted, orphans) {
		t.Errorf("gc deleted %v, want exactly the orphans %v", res.Deleted, orphans)
	}
	versions := f.versions()
	if len(res.Kept) != releases || res.Retained != len(versions) {
		t.Errorf("gc kept %d snapshots for %d versions, want %d for %d", len(res.Kept), res.Retained, releases, len(versions))
	}
	if n := len(f.snapshots()); n != releases {
		t.Errorf("%d snapshots left, want %d", n, releases)
	}

	// Every retained version still reverts to a healthy release.
	for _, v := range versions[1:] {
		rec, code, _ := f.rollbackJSON("-to-version", strconv.FormatUint(*v.Version, 10))
		if code != exitOK || rec.Outcome != deploy.Succeeded {
			t.Errorf("rollback to version %d after gc: exit %d outcome %q", *v.Version, code, rec.Outcome)
		}
	}

	// -keep untags older releases (Nomad keeps every tagged version); a dry
	// run only says so.
	out, _, code = f.deployer("gc", "-env", "dev", "-keep", "3", "-dry-run", "-json")
	res = deploy.GCResult{}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitOK {
		t.Fatalf("gc -keep 3 -dry-run: exit %d, %v", code, err)
	}
	all := f.versions()
	if len(res.Untagged) != len(all)-3 || len(res.Deleted) != 0 {
		t.Errorf("dry run would untag %v and delete %v, want the %d oldest tags and nothing", res.Untagged, res.Deleted, len(all)-3)
	}
	for _, v := range all {
		if v.VersionTag == nil {
			t.Errorf("a dry run untagged version %d", *v.Version)
		}
	}

	// For real: only the newest 3 keep their tags; no snapshot goes, since
	// Nomad keeps up to job_tracked_versions (10 on the stack) untagged
	// versions and these are 7 (TestHistoryBeyondNomadsTrackedVersions
	// shows the versions over the limit go).
	out, _, code = f.deployer("gc", "-env", "dev", "-keep", "3", "-json")
	res = deploy.GCResult{}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitOK {
		t.Fatalf("gc -keep 3: exit %d, %v", code, err)
	}
	if len(res.Deleted) != 0 {
		t.Errorf("gc -keep 3 deleted %v while every version is still retained", res.Deleted)
	}
	for i, v := range f.versions() {
		if tagged := v.VersionTag != nil; tagged != (i < 3) {
			t.Errorf("version %d (newest-first #%d): tagged %v after gc -keep 3", *v.Version, i, tagged)
		}
	}
}
