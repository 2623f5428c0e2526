package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/release"
	"github.com/kodekloud/counter/internal/testsupport/envtest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// outside is one way a job changes outside the deployer after its release
// v0, and what the deployer must say about it then.
type outside struct {
	name string
	// change changes dev's job (v0, count 1, released as rec) and returns
	// the job version it made, or -1 when it made none.
	change func(f *fixture, rec deploy.Record) int
	// drift is a piece of status's drift, "" for none; release is the
	// release status names, madeOutside whether the running version is a
	// copy made outside the deployer.
	drift       string
	release     string
	madeOutside bool
	// promote is the exit of promote -from dev to an empty test.
	promote int
	// then checks what else the case promises, last.
	then func(f *fixture)
}

// TestChangesOutsideTheDeployerAreDrift drives each way a job changes
// outside the deployer, keeping the deployer's meta or not, and checks that
// status (of dev, and of every environment), history, promote and gc tell
// what runs: the running version's spec against the release's own version,
// drift with what differs, exit 6; a version that runs its release exactly
// (nomad job revert) is none.
func TestChangesOutsideTheDeployerAreDrift(t *testing.T) {
	t.Parallel()
	tests := []outside{
		{name: "nomad job scale", change: func(f *fixture, _ deploy.Record) int {
			if out, code := f.nomadCLI("job", "scale", "-detach", f.job, "web", "3"); code != 0 {
				f.t.Fatalf("nomad job scale: exit %d: %s", code, out)
			}
			return 1
		}, drift: "count 1 -> 3 since v0 (version 1, not made by the deployer)", release: "v0", madeOutside: true, promote: exitError},

		{name: "nomad job run of an edited spec", change: func(f *fixture, rec deploy.Record) int {
			// What a person does with the job's own source: read the
			// snapshot into another folder, point the template at it, add
			// an env var, run it. The meta stays the deployer's.
			manual := strings.TrimSuffix(rec.ConfigPath, rec.ConfigHash) + "manual"
			for k, v := range rec.Config {
				if _, err := f.kv.KV().Put(&consul.KVPair{Key: manual + "/" + k, Value: []byte(v)}, nil); err != nil {
					f.t.Fatal(err)
				}
			}
			spec, vars := f.submission(0)
			spec = strings.Replace(spec, `LISTEN_ADDR = "${NOMAD_ADDR_http}"`, `LISTEN_ADDR = "${NOMAD_ADDR_http}"`+"\n        EDITED = \"by hand\"", 1)
			vars = strings.Replace(vars, fmt.Sprintf("config_path = %q", rec.ConfigPath), fmt.Sprintf("config_path = %q", manual), 1)
			f.nomadRun(spec, vars)
			return 1
		}, drift: "its template reads config at ", release: "v0", madeOutside: true, promote: exitError},

		{name: "a UI edit of the image variable", change: func(f *fixture, rec deploy.Record) int {
			f.uiEditImage(rec.Image, f.otherImage())
			return 1
		}, drift: "image ", release: "v0", madeOutside: true, promote: exitError},

		{name: "nomad job revert", change: func(f *fixture, rec deploy.Record) int {
			// v1 (count 2) by the deployer, then back to v0 by hand: it runs
			// v0's release exactly, which is no drift.
			f.writeEnv("dev", f.redis, 2, "")
			if r, code, _ := submitJSON(f.t, f, "-env", "dev", "-image", rec.Image); code != exitOK || r.Release != "v1" {
				f.t.Fatalf("submit count 2: exit %d %+v", code, r)
			}
			if out, code := f.nomadCLI("job", "revert", "-detach", f.job, "0"); code != 0 {
				f.t.Fatalf("nomad job revert: exit %d: %s", code, out)
			}
			return 2
		}, release: "v0", madeOutside: true, promote: exitOK, then: func(f *fixture) {
			// The default rollback goes back before v0, which runs again,
			// never to v1, which the revert went back from.
			before := len(f.versions())
			_, code, stderr := f.rollbackJSON()
			if code != exitError || !strings.Contains(stderr, "no stable release older than v0") || len(f.versions()) != before {
				f.t.Errorf("rollback after nomad job revert to v0: exit %d, %d versions (had %d)\n%s; want exit 1, none made: v1 was gone back from",
					code, len(f.versions()), before, stderr)
			}
		}},

		{name: "consul kv put on the snapshot", change: func(f *fixture, rec deploy.Record) int {
			if _, err := f.kv.KV().Put(&consul.KVPair{Key: rec.ConfigPath + "/PORT", Value: []byte("1")}, nil); err != nil {
				f.t.Fatal(err)
			}
			return -1
		}, drift: "was edited by hand", release: "v0", promote: exitError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if strings.HasPrefix(tt.name, "a UI") {
				envtest.NeedsServers(t, "Nomad, Consul, Redis, Docker and chromium")
			}
			f := newFixture(t)
			good, _ := releaseImages(t, f.stack)
			f.redis = redistest.Start(t)
			f.writeEnv("dev", f.redis, 1, "")
			testJob := f.otherJob("counter-test")
			f.writeEnvJob("test", testJob, redistest.Start(t), 1, "")
			rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", good)
			if code != exitOK || rec.Release != "v0" {
				t.Fatalf("release v0: exit %d %+v", code, rec)
			}
			if st, code := f.statusJSON(); code != exitOK || len(st.Drift) != 0 {
				t.Fatalf("before the change: status exit %d, drift %q; want none", code, st.Drift)
			}

			made := tt.change(f, rec)
			if made >= 0 {
				if dep := f.waitForDeployment(uint64(made), 2*time.Minute); dep.Status != "successful" {
					t.Fatalf("the deployment of version %d is %s: %s", made, dep.Status, dep.StatusDescription)
				}
			}

			// status -env dev: what runs, with what differs, exit 6.
			st, code := f.statusJSON()
			drifted := strings.Join(st.Drift, "; ")
			t.Logf("status: release %s, job version %d, drift %q", st.Release, st.Version, drifted)
			if want := map[bool]int{true: exitDrift, false: exitOK}[tt.drift != ""]; code != want {
				t.Errorf("status: exit %d, want %d (drift %q)", code, want, drifted)
			}
			if !strings.Contains(drifted, tt.drift) || (tt.drift == "") != (drifted == "") {
				t.Errorf("status drift %q, want %q", drifted, tt.drift)
			}
			if st.Release != tt.release || st.MadeOutside != tt.madeOutside || (made >= 0 && st.Version != uint64(made)) {
				t.Errorf("status: release %s, job version %d, made outside %v; want %s, %d, %v", st.Release, st.Version, st.MadeOutside, tt.release, made, tt.madeOutside)
			}
			out, _, _ := f.deployer("status", "-env", "dev")
			if tt.madeOutside && !strings.Contains(out, "made outside the deployer") {
				t.Errorf("status does not say the running version was made outside the deployer:\n%s", out)
			}

			// status of every environment: the same drift in dev's row.
			rows, code := statusAllJSON(t, f)
			if want := map[bool]int{true: exitDrift, false: exitOK}[tt.drift != ""]; code != want || rows[0].Environment != "dev" ||
				strings.Join(rows[0].Drift, "; ") != drifted {
				t.Errorf("status of every environment: exit %d, dev's drift %q; want %d, %q", code, rows[0].Drift, want, drifted)
			}

			// history: the version made outside is nobody's release, and says
			// how it differs; an edited snapshot is not shown as the config.
			entries := f.historyJSON()
			cur := entries[0]
			if tt.madeOutside && (cur.CopyOf != tt.release || cur.ByDeployer || cur.SubmittedBy != "") {
				t.Errorf("history: current %+v; want a copy of %s, by hand", cur, tt.release)
			}
			told := strings.Join(cur.Drift, "; ")
			if cur.ConfigEdited != "" {
				told += "; config snapshot was edited by hand"
			}
			if (tt.drift == "") != (told == "") {
				t.Errorf("history tells drift %q of the running version; status %q", told, drifted)
			}

			// promote: what ran in dev, or nothing.
			_, code, stderr := f.promote("-from", "dev", "-env", "test")
			if code != tt.promote {
				t.Errorf("promote -from dev: exit %d, want %d\n%s", code, tt.promote, stderr)
			}
			if tt.promote != exitOK {
				if !strings.Contains(stderr, "drift") && !strings.Contains(stderr, "edited") {
					t.Errorf("promote's refusal does not say why: %s", stderr)
				}
				if _, _, err := f.nomad.Jobs().Info(testJob, nil); !isNotFound(err) {
					t.Errorf("a refused promote registered test's job (%v)", err)
				}
			}

			// gc: nothing the running job reads goes.
			out, _, code = f.deployer("gc", "-env", "dev", "-json")
			var res deploy.GCResult
			if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitOK {
				t.Fatalf("gc: exit %d, %v", code, err)
			}
			for _, p := range f.readPaths() {
				if pairs, _, err := f.kv.KV().List(p+"/", nil); err != nil || len(pairs) == 0 {
					t.Errorf("gc deleted %s (said %v), which the running job reads (%v)", p, res.Deleted, err)
				}
			}
			if tt.then != nil {
				tt.then(f)
			}
		})
	}
}

// statusJSON runs status -env dev -json.
func (f *fixture) statusJSON() (deploy.Status, int) {
	f.t.Helper()
	out, _, code := f.deployer("status", "-env", "dev", "-json")
	var st deploy.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		f.t.Fatalf("status -json printed %q: %v", out, err)
	}
	return st, code
}

// submission returns the job source and variables Nomad keeps with version.
func (f *fixture) submission(version int) (spec, vars string) {
	f.t.Helper()
	sub, _, err := f.nomad.Jobs().Submission(f.job, version, nil)
	if err != nil {
		f.t.Fatalf("submission of version %d: %v", version, err)
	}
	return sub.Source, sub.Variables
}

// nomadRun runs spec with vars through nomad job run, as a person would.
func (f *fixture) nomadRun(spec, vars string) {
	f.t.Helper()
	dir := f.t.TempDir()
	specFile, varFile := filepath.Join(dir, "job.nomad.hcl"), filepath.Join(dir, "vars.hcl")
	for file, src := range map[string]string{specFile: spec, varFile: vars} {
		if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
	if out, code := f.nomadCLI("job", "run", "-detach", "-var-file", varFile, specFile); code != 0 {
		f.t.Fatalf("nomad job run: exit %d: %s", code, out)
	}
}

// readPaths are the snapshot folders the running version's templates read.
func (f *fixture) readPaths() []string {
	f.t.Helper()
	var paths []string
	for _, tg := range f.versions()[0].TaskGroups {
		for _, task := range tg.Tasks {
			for _, tmpl := range task.Templates {
				for _, line := range strings.Split(*tmpl.EmbeddedTmpl, "\n") {
					if _, rest, ok := strings.Cut(line, `key "`); ok {
						key, _, _ := strings.Cut(rest, `"`)
						if p := filepath.Dir(key); !strings.Contains(strings.Join(paths, " "), p) {
							paths = append(paths, p)
						}
					}
				}
			}
		}
	}
	if len(paths) == 0 {
		f.t.Fatal("the running version reads no snapshot")
	}
	return paths
}

// otherImage is another build of the app, pinned by digest.
func (f *fixture) otherImage() string {
	f.t.Helper()
	out, _, _ := f.deployer("render", "-env", "dev", "-image", imageVariant(f.t, f.stack, 1))
	var rendered struct {
		Job struct {
			TaskGroups []struct {
				Tasks []struct{ Config map[string]any }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &rendered); err != nil || len(rendered.Job.TaskGroups) == 0 {
		f.t.Fatalf("render printed %q: %v", out, err)
	}
	return rendered.Job.TaskGroups[0].Tasks[0].Config["image"].(string)
}

// uiEditImage edits the job in the Nomad UI as a person would: the job's
// Definition page, Edit, the image in the HCL variables the deployer
// submitted, Plan, Run. The UI registers the job from the submission, the
// deployer's meta included.
func (f *fixture) uiEditImage(from, to string) {
	f.t.Helper()
	chromium := envtest.LookPath(f.t, "chromium", "chromium")
	b := newBrowser(f.t, chromium)
	if token := stacktest.OperatorToken(f.t, f.stack); token != "" {
		b.do("sign in with an operator token", chromedp.Navigate(f.stack.NomadAddr+"/v1/status/leader"),
			chromedp.Evaluate[chromedp.Void](fmt.Sprintf("window.localStorage.setItem('nomadTokenSecret', %q)", token)))
	}
	vars := `//div[contains(@class,"is-variable-editor")]/div[contains(concat(" ", @class, " "), " CodeMirror ")]`
	edit := `//button[normalize-space(.)="Edit"]`
	b.page, b.pageReady = f.stack.NomadAddr+"/ui/jobs/"+f.job+"@default/definition", edit
	b.do("open the job's definition", chromedp.Navigate(b.page), chromedp.WaitVisible(edit))
	b.do("edit it", chromedp.Click(edit), chromedp.WaitReady(vars))
	// CodeMirror keeps its text in its instance, not in the DOM: change it
	// there, which fires the change event the UI listens to.
	b.do("change the image variable", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		const cm = document.evaluate(%q, document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue.CodeMirror;
		cm.setValue(cm.getValue().replace(%q, %q));
	})()`, vars, fmt.Sprintf("image = %q", from), fmt.Sprintf("image = %q", to))))
	plan, run := `//button[normalize-space(.)="Plan"]`, `//button[normalize-space(.)="Run"]`
	b.do("plan", chromedp.Click(plan), chromedp.WaitVisible(run))
	b.do("run", chromedp.Click(run))
	deadline := time.Now().Add(time.Minute)
	for len(f.versions()) < 2 {
		if time.Now().After(deadline) {
			f.t.Fatal("the UI registered no new version within a minute")
		}
		time.Sleep(250 * time.Millisecond)
	}
	if v := f.versions()[0]; v.Meta[release.MetaConfigPath] == "" || v.TaskGroups[0].Tasks[0].Config["image"] != to {
		f.t.Fatalf("the UI's version runs %v with meta %v; want %s with the deployer's meta", v.TaskGroups[0].Tasks[0].Config["image"], v.Meta, to)
	}
}
