package main

import (
	"strconv"
	"strings"
	"testing"

	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

// Submitting the running build again repairs a hand edit or a deletion of
// its config snapshot: the recorded config comes back as a fresh snapshot
// and a new version, and says so; then it is no change again.
func TestSubmitRepairsDriftOfTheRunningSnapshot(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	rdb := redistest.Start(t)
	f.writeEnv("dev", rdb, 1, "")
	first, code, _ := submitJSON(t, f, "-env", "dev", "-image", good)
	if code != exitOK {
		t.Fatalf("first submit: exit %d %+v", code, first)
	}
	run := released{rec: first, redis: rdb}

	tests := []struct {
		name  string
		drift func(path string)
		says  string
	}{
		{"edited by hand", func(path string) {
			if _, err := f.kv.KV().Put(&consul.KVPair{Key: path + "/PORT", Value: []byte("1")}, nil); err != nil {
				t.Fatal(err)
			}
		}, "was edited by hand"},
		{"deleted", func(path string) {
			if _, err := f.kv.KV().DeleteTree(path+"/", nil); err != nil {
				t.Fatal(err)
			}
		}, "was deleted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := run.rec
			tt.drift(before.ConfigPath)
			if _, _, code := f.deployer("status", "-env", "dev"); code != exitDrift {
				t.Fatalf("status after the drift: exit %d, want %d", code, exitDrift)
			}
			rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", good)
			if code != exitOK || rec.Outcome != deploy.Succeeded || !strings.Contains(rec.Repair, tt.says) {
				t.Fatalf("submit of the same build: exit %d, outcome %q, repair %q; want a new version that repairs it\n%s", code, rec.Outcome, rec.Repair, stderr)
			}
			if rec.ConfigPath == before.ConfigPath || rec.ConfigHash != before.ConfigHash || rec.Release == before.Release {
				t.Errorf("repair: %s at %s, want a new version with config %s at a fresh path (was %s at %s)",
					rec.Release, rec.ConfigPath, before.ConfigHash, before.Release, before.ConfigPath)
			}
			if values := f.snapshot(rec.ConfigPath); values["PORT"] != strconv.Itoa(rdb.Port) || values["HOST"] != rdb.Host {
				t.Errorf("the fresh snapshot holds %v, want the environment's config", values)
			}
			if out, _, code := f.deployer("status", "-env", "dev"); code != exitOK {
				t.Errorf("status after the repair: exit %d\n%s", code, out)
			}
			run = released{rec: rec, redis: rdb}
			f.wantRunning(run, "after the repair")
			again, code, _ := submitJSON(t, f, "-env", "dev", "-image", good)
			if code != exitOK || again.Outcome != deploy.NoChange {
				t.Errorf("submit once repaired: exit %d outcome %q, want no change", code, again.Outcome)
			}
		})
	}
}

// snapshot reads a snapshot's keys from Consul.
func (f *fixture) snapshot(path string) map[string]string {
	f.t.Helper()
	pairs, _, err := f.kv.KV().List(path+"/", nil)
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pairs {
		out[strings.TrimPrefix(p.Key, path+"/")] = string(p.Value)
	}
	return out
}
