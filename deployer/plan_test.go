package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

// Nomad's answers to plans of the counter job, as the stack's Nomad 1.11
// server gave them in TestPlanExitsAsNomadJobPlan (its plan -json, cut to the
// diff's type and the annotations that the exit code reads).
const (
	// The first release of a job places its one instance.
	planNewJob = `{"Diff": {"Type": "Added"}, "Annotations": {"DesiredTGUpdates": {"web": {"Ignore": 0, "Place": 1,
		"Migrate": 0, "Stop": 0, "InPlaceUpdate": 0, "DestructiveUpdate": 0, "Canary": 0, "Preemptions": 0, "Disconnect": 0, "Reconnect": 0, "RescheduleNow": 0, "RescheduleLater": 0}}, "PreemptedAllocs": null}}`
	// Nomad annotates the unchanged job as an in-place update all the same:
	// only the diff's type tells that nothing changes.
	planSameRelease = `{"Diff": {"Type": "None"}, "Annotations": {"DesiredTGUpdates": {"web": {"Ignore": 0, "Place": 0,
		"Migrate": 0, "Stop": 0, "InPlaceUpdate": 1, "DestructiveUpdate": 0, "Canary": 0, "Preemptions": 0, "Disconnect": 0, "Reconnect": 0, "RescheduleNow": 0, "RescheduleLater": 0}}, "PreemptedAllocs": null}}`
	// An update block edited (healthy_deadline): in place.
	planUpdateBlockOnly = `{"Diff": {"Type": "Edited"}, "Annotations": {"DesiredTGUpdates": {"web": {"Ignore": 0, "Place": 0,
		"Migrate": 0, "Stop": 0, "InPlaceUpdate": 1, "DestructiveUpdate": 0, "Canary": 0, "Preemptions": 0, "Disconnect": 0, "Reconnect": 0, "RescheduleNow": 0, "RescheduleLater": 0}}, "PreemptedAllocs": null}}`
	// count 1 => 2: one more instance placed.
	planOneMore = `{"Diff": {"Type": "Edited"}, "Annotations": {"DesiredTGUpdates": {"web": {"Ignore": 0, "Place": 1,
		"Migrate": 0, "Stop": 0, "InPlaceUpdate": 1, "DestructiveUpdate": 0, "Canary": 0, "Preemptions": 0, "Disconnect": 0, "Reconnect": 0, "RescheduleNow": 0, "RescheduleLater": 0}}, "PreemptedAllocs": null}}`
	// A new image under an update block with a canary: the canary first.
	planNewImage = `{"Diff": {"Type": "Edited"}, "Annotations": {"DesiredTGUpdates": {"web": {"Ignore": 1, "Place": 0,
		"Migrate": 0, "Stop": 0, "InPlaceUpdate": 0, "DestructiveUpdate": 0, "Canary": 1, "Preemptions": 0, "Disconnect": 0, "Reconnect": 0, "RescheduleNow": 0, "RescheduleLater": 0}}, "PreemptedAllocs": null}}`
)

func TestPlanExit(t *testing.T) {
	tests := []struct {
		name string
		resp string
		want int
	}{
		{"places the first instance of a new job", planNewJob, exitPlanChanged},
		{"no change to the running release", planSameRelease, exitOK},
		{"an update block edited in place creates or destroys nothing", planUpdateBlockOnly, exitOK},
		{"one more instance is placed", planOneMore, exitPlanChanged},
		{"a new image starts as a canary", planNewImage, exitPlanChanged},
		{"one fewer instance is stopped", `{"Diff": {"Type": "Edited"}, "Annotations": {"DesiredTGUpdates": {"web": {"Ignore": 1, "Stop": 1}}}}`, exitPlanChanged},
		{"a new image replaces the instance without a canary", `{"Diff": {"Type": "Edited"}, "Annotations": {"DesiredTGUpdates": {"web": {"DestructiveUpdate": 1}}}}`, exitPlanChanged},
		{"an allocation migrates", `{"Diff": {"Type": "Edited"}, "Annotations": {"DesiredTGUpdates": {"web": {"Migrate": 1}}}}`, exitPlanChanged},
		{"a change in the second task group counts", `{"Diff": {"Type": "Edited"}, "Annotations": {"DesiredTGUpdates": {
			"a": {"Ignore": 1}, "b": {"DestructiveUpdate": 2}}}}`, exitPlanChanged},
		// nomad job plan reads no annotation when the diff says nothing
		// changed.
		{"no diff, whatever the annotations", `{"Diff": {"Type": "None"}, "Annotations": {"DesiredTGUpdates": {"web": {"Place": 1}}}}`, exitOK},
		// Preemptions alone do not count in Nomad's rule either.
		{"preemptions alone", `{"Diff": {"Type": "Edited"}, "Annotations": {"DesiredTGUpdates": {"web": {"Ignore": 1, "Preemptions": 1}}}}`, exitOK},
		{"no annotations", `{"Diff": {"Type": "Edited"}}`, exitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var resp nomad.JobPlanResponse
			if err := json.Unmarshal([]byte(tt.resp), &resp); err != nil {
				t.Fatal(err)
			}
			if got := planExit(&resp); got != tt.want {
				t.Errorf("planExit(%s) = %d, want %d", tt.resp, got, tt.want)
			}
		})
	}
}

// TestPlanExitsAsNomadJobPlan plans each release twice, with the deployer
// and with the nomad CLI on the job the deployer renders, and wants the same
// exit code from both: what a script written for nomad job plan expects.
func TestPlanExitsAsNomadJobPlan(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	other := imageVariant(t, f.stack, 1)
	rdb := redistest.Start(t)

	nomadPlan := func(t *testing.T, image string) int {
		t.Helper()
		out, _, code := f.deployer("render", "-env", "dev", "-image", image)
		if code != exitOK {
			t.Fatalf("render: exit %d", code)
		}
		file := filepath.Join(t.TempDir(), "job.json")
		if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		_, code = f.nomadCLI("job", "plan", "-json", file)
		return code
	}

	f.writeEnv("dev", rdb, 1, "")
	steps := []struct {
		name      string
		edit      func()
		image     string
		want      int
		noChange  bool // plan says "No change"
		submitted bool // submit it after planning
	}{
		{"a new job", func() {}, good, exitPlanChanged, false, true},
		{"the same release", func() {}, good, exitOK, true, false},
		{"an update block edited in place", func() { f.editEnv("dev", `healthy_deadline = "30s"`, `healthy_deadline = "40s"`) }, good, exitOK, false, true},
		{"one more instance", func() { f.editEnv("dev", "count       = 1", "count       = 2") }, good, exitPlanChanged, false, false},
		{"a new image", func() { f.editEnv("dev", "count       = 2", "count       = 1") }, other, exitPlanChanged, false, false},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.edit()
			out, _, code := f.deployer("plan", "-env", "dev", "-image", s.image)
			jout, _, _ := f.deployer("plan", "-env", "dev", "-image", s.image, "-json")
			t.Logf("plan -json: %s", jout)
			if code != s.want {
				t.Errorf("deployer plan: exit %d, want %d; stdout:\n%s", code, s.want, out)
			}
			if noChange := strings.HasPrefix(out, "No change"); noChange != s.noChange {
				t.Errorf("deployer plan says no change: %v, want %v; stdout:\n%s", noChange, s.noChange, out)
			}
			if n := nomadPlan(t, s.image); n != code {
				t.Errorf("nomad job plan exits %d, deployer plan %d", n, code)
			}
			if s.submitted {
				if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", s.image); code != exitOK {
					t.Fatalf("submit: exit %d, record %+v", code, rec)
				}
			}
		})
	}
}
