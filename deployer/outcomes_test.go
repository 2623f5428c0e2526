package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/release"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// The tests of this file hold the deployer's word to the cluster's state
// (issue 23): what it says ran, did not change, or was not written is what
// Nomad and Consul show.

// submitWith runs submit as the CLI does, through a Deployer that tweak may
// change first (a shorter patience) and a context the test controls, and
// returns the record -json printed, stderr and the exit code.
func (f *fixture) submitWith(ctx context.Context, env map[string]string, tweak func(*deploy.Deployer), opts deploy.SubmitOptions, envName, image string) (deploy.Record, string, int) {
	f.t.Helper()
	var out, errb bytes.Buffer
	sh := &shell{getenv: func(k string) string { return env[k] }, stdout: &out, stderr: &errb}
	rf := releaseFlags{
		envFlags: envFlags{env: envName, dir: filepath.Join(f.dir, "environments"), kvPrefix: configstore.DefaultPrefix, json: true},
		image:    image, jobFile: filepath.Join(f.dir, "jobs", "counter.nomad.hcl"),
	}
	d, rel, closeClients, err := rf.prepare(ctx, sh, nil)
	if err == nil {
		defer closeClients()
		if tweak != nil {
			tweak(d)
		}
		var rec *deploy.Record
		rec, err = d.Submit(ctx, rel, opts)
		err = finishRecord(sh, rec, err, true)
	}
	code := exitCode(err, &errb)
	f.t.Logf("submit -env %s -image %s: exit %d\n%s", envName, image, code, stacktest.Redact(errb.String()))
	var rec deploy.Record
	if out.Len() > 0 {
		if jerr := json.Unmarshal(out.Bytes(), &rec); jerr != nil {
			f.t.Fatalf("submit printed %q: %v", out.String(), jerr)
		}
	}
	return rec, errb.String(), code
}

// nomadProxy stands in front of the stack's Nomad as a load balancer
// would, and lets register decide what becomes of a job register (PUT
// /v1/jobs): forward it and answer, or not. Nomad's own answers are real;
// only what a gateway, a cut connection or a Ctrl-C does to them is made.
func nomadProxy(t *testing.T, nomadAddr string, register func(w http.ResponseWriter, r *http.Request, forward http.Handler)) string {
	t.Helper()
	return nomadProxyOn(t, nomadAddr, func(r *http.Request) bool {
		return r.Method == http.MethodPut && r.URL.Path == "/v1/jobs"
	}, register)
}

// nomadProxyOn is nomadProxy for the requests that match says, a revert
// (PUT /v1/job/ID/revert) say.
func nomadProxyOn(t *testing.T, nomadAddr string, match func(*http.Request) bool, handle func(w http.ResponseWriter, r *http.Request, forward http.Handler)) string {
	t.Helper()
	target, err := url.Parse(nomadAddr)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if match(r) {
			handle(w, r, proxy)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// versionsFailOnce stands in front of addr and answers every read of a
// job's versions with a 500 once done is set: a leader lost right after a
// write.
func versionsFailOnce(t *testing.T, addr string, done *atomic.Bool) string {
	t.Helper()
	target, err := url.Parse(addr)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if done.Load() && strings.HasSuffix(r.URL.Path, "/versions") {
			http.Error(w, "rpc error: No cluster leader", http.StatusInternalServerError)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// The proxy's handlings of a write (a register, a revert) in the tests
// below; cancel ends the command's context.

// badGatewayAfter forwards the write, drops Nomad's answer and says 502.
func badGatewayAfter(func()) func(http.ResponseWriter, *http.Request, http.Handler) {
	return func(w http.ResponseWriter, r *http.Request, forward http.Handler) {
		forward.ServeHTTP(httptest.NewRecorder(), r)
		http.Error(w, "Bad Gateway", http.StatusBadGateway)
	}
}

// badGatewayBefore says 502 without forwarding the write.
func badGatewayBefore(func()) func(http.ResponseWriter, *http.Request, http.Handler) {
	return func(w http.ResponseWriter, r *http.Request, _ http.Handler) {
		http.Error(w, "Bad Gateway", http.StatusBadGateway)
	}
}

// cancelWhileApplied forwards the write, then ends the command (Ctrl-C)
// before it gets Nomad's answer.
func cancelWhileApplied(cancel func()) func(http.ResponseWriter, *http.Request, http.Handler) {
	return func(w http.ResponseWriter, r *http.Request, forward http.Handler) {
		forward.ServeHTTP(httptest.NewRecorder(), r)
		cancel()
		<-r.Context().Done()
	}
}

// passThrough forwards the write and its answer.
func passThrough(func()) func(http.ResponseWriter, *http.Request, http.Handler) {
	return func(w http.ResponseWriter, r *http.Request, forward http.Handler) { forward.ServeHTTP(w, r) }
}

// TestAnUnclearRegisterNeverDeletesWhatMayRun: a register that got no
// clear answer may have been applied (Nomad runs the register RPC without
// the request's context), so its snapshot is kept; the deployer reads
// back whether the version exists, goes on if it does, and otherwise says
// the outcome is unknown (exit 7) and what to check. Before, each of
// these deleted the snapshot and said exit 1, "nothing was changed".
func TestAnUnclearRegisterNeverDeletesWhatMayRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// register is the proxy's handling of the register; cancel ends
		// the submit's context.
		register func(cancel func()) func(w http.ResponseWriter, r *http.Request, forward http.Handler)
		// versions502 answers every read of the job's versions, once the
		// register went through, with a 500.
		versionsFail bool
		wantCode     int
		wantVersion  bool // Nomad has version 0
		wantTag      bool // tagged v0
		wantStderr   []string
	}{
		{
			name:     "a gateway's 502 after Nomad registered it: read back, watched, success",
			register: badGatewayAfter,
			wantCode: exitOK, wantVersion: true, wantTag: true,
			wantStderr: []string{"no clear answer to the register", "(read back)"},
		},
		{
			name:       "a gateway's 502 before Nomad saw it: unknown, the snapshot kept, what to check said",
			register:   badGatewayBefore,
			wantCode:   exitUnknown,
			wantStderr: []string{"is kept", "deployer history -env dev", "deployer gc -env dev"},
		},
		{
			name:     "a Ctrl-C while Nomad registers it: unknown, the version named and tagged",
			register: cancelWhileApplied,
			wantCode: exitUnknown, wantVersion: true, wantTag: true,
			wantStderr: []string{"the command ended", "registered v0 as job"},
		},
		{
			name:         "registered, then its versions unreadable: unknown, not exit 1",
			register:     passThrough,
			versionsFail: true,
			wantCode:     exitUnknown, wantVersion: true,
			wantStderr: []string{"Nomad registered the release", "deployer history -env dev"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			good, _ := releaseImages(t, f.stack)
			f.writeEnv("dev", redistest.Start(t), 1, "")
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var registered atomic.Bool
			handle := tt.register(cancel)
			addr := nomadProxy(t, f.stack.NomadAddr, func(w http.ResponseWriter, r *http.Request, forward http.Handler) {
				handle(w, r, forward)
				registered.Store(true)
			})
			if tt.versionsFail {
				addr = versionsFailOnce(t, addr, &registered)
			}
			env := map[string]string{}
			for k, v := range f.env {
				env[k] = v
			}
			env["NOMAD_ADDR"] = addr
			rec, stderr, code := f.submitWith(ctx, env, func(d *deploy.Deployer) { d.Patience = 2 * time.Second }, deploy.SubmitOptions{}, "dev", good)
			if code != tt.wantCode {
				t.Errorf("exit %d (%s), want %d", code, rec.Outcome, tt.wantCode)
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not say %q:\n%s", want, stderr)
				}
			}
			// What the cluster shows, read past the proxy.
			snaps := f.snapshots()
			if len(snaps) != 1 {
				t.Fatalf("snapshots %v, want the one this submit wrote, kept", snaps)
			}
			vs, _, _, err := f.nomad.Jobs().Versions(f.job, false, nil)
			if err != nil && !isNotFound(err) {
				t.Fatal(err)
			}
			if got := len(vs) > 0; got != tt.wantVersion {
				t.Fatalf("Nomad has a version: %v, want %v", got, tt.wantVersion)
			}
			if tt.wantVersion {
				tagged := vs[0].VersionTag != nil && vs[0].VersionTag.Name == "v0"
				if tagged != tt.wantTag {
					t.Errorf("version 0 tagged v0: %v, want %v", tagged, tt.wantTag)
				}
				if p := vs[0].Meta[release.MetaConfigPath]; p+"/" != snaps[0] {
					t.Errorf("version 0 reads %s, which is not the snapshot kept (%v)", p, snaps)
				}
			}
		})
	}
}

// rollbackWith runs rollback -to-version to as the CLI does, through a
// Deployer that tweak may change first and a context the test controls,
// and returns the record -json printed, stderr and the exit code.
func (f *fixture) rollbackWith(ctx context.Context, env map[string]string, tweak func(*deploy.Deployer), envName string, to uint64) (deploy.Record, string, int) {
	f.t.Helper()
	var out, errb bytes.Buffer
	sh := &shell{getenv: func(k string) string { return env[k] }, stdout: &out, stderr: &errb}
	ef := envFlags{env: envName, dir: filepath.Join(f.dir, "environments"), kvPrefix: configstore.DefaultPrefix, json: true}
	d, e, closeClients, err := ef.open(sh)
	if err == nil {
		defer closeClients()
		if tweak != nil {
			tweak(d)
		}
		var rec *deploy.Record
		rec, _, err = d.Rollback(ctx, e.Namespace, e.Job, deploy.Target{Version: &to}, deploy.RollbackOptions{Who: "test"})
		err = finishRecord(sh, rec, err, true)
	}
	code := exitCode(err, &errb)
	f.t.Logf("rollback -env %s -to-version %d: exit %d\n%s", envName, to, code, stacktest.Redact(errb.String()))
	var rec deploy.Record
	if out.Len() > 0 {
		if jerr := json.Unmarshal(out.Bytes(), &rec); jerr != nil {
			f.t.Fatalf("rollback printed %q: %v", out.String(), jerr)
		}
	}
	return rec, errb.String(), code
}

// TestAnUnclearRevertIsReadBack: rollback follows submit's rule
// (TestAnUnclearRegisterNeverDeletesWhatMayRun). A revert that got no clear
// answer may have been applied, so the deployer reads back whether the job
// has the new version: it goes on if it does, and otherwise says the
// outcome is unknown (exit 7) and what to check. Before, each of these
// said exit 1, as if nothing had changed.
func TestAnUnclearRevertIsReadBack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		revert       func(cancel func()) func(w http.ResponseWriter, r *http.Request, forward http.Handler)
		versionsFail bool // every read of the versions fails once the revert went through
		wantCode     int
		wantVersion  bool // Nomad has version 2, v0's release again
		wantTag      bool // tagged v2
		wantStderr   []string
	}{
		{
			name:     "a gateway's 502 after Nomad reverted: read back, watched, success",
			revert:   badGatewayAfter,
			wantCode: exitOK, wantVersion: true, wantTag: true,
			wantStderr: []string{"no clear answer to the revert", "(read back)"},
		},
		{
			name:       "a gateway's 502 before Nomad saw it: unknown, what to check said",
			revert:     badGatewayBefore,
			wantCode:   exitUnknown,
			wantStderr: []string{"Nomad does not show it", "deployer history -env dev", "if none came, nothing changed"},
		},
		{
			name: "a definite refusal (400): exit 1, nothing changed",
			revert: func(func()) func(http.ResponseWriter, *http.Request, http.Handler) {
				return func(w http.ResponseWriter, r *http.Request, _ http.Handler) {
					http.Error(w, "job version not found", http.StatusBadRequest)
				}
			},
			wantCode:   exitError,
			wantStderr: []string{"400", "nothing was changed"},
		},
		{
			name:     "a Ctrl-C while Nomad reverts: unknown, the version named and tagged",
			revert:   cancelWhileApplied,
			wantCode: exitUnknown, wantVersion: true, wantTag: true,
			wantStderr: []string{"the command ended", "as version 2 (read back)"},
		},
		{
			name:         "reverted, then its versions unreadable: unknown, not exit 1",
			revert:       passThrough,
			versionsFail: true,
			wantCode:     exitUnknown, wantVersion: true,
			wantStderr: []string{"Nomad reverted", "deployer history -env dev"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			good, _ := releaseImages(t, f.stack)
			other := imageVariant(t, f.stack, 1)
			f.writeEnv("dev", redistest.Start(t), 1, "")
			var first deploy.Record
			for i, img := range []string{good, other} {
				rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", img)
				if code != exitOK {
					t.Fatalf("release %d: exit %d (%s)", i, code, rec.Outcome)
				}
				if i == 0 {
					first = rec
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var reverted atomic.Bool
			handle := tt.revert(cancel)
			addr := nomadProxyOn(t, f.stack.NomadAddr, func(r *http.Request) bool {
				return strings.HasSuffix(r.URL.Path, "/revert")
			}, func(w http.ResponseWriter, r *http.Request, forward http.Handler) {
				handle(w, r, forward)
				reverted.Store(true)
			})
			if tt.versionsFail {
				addr = versionsFailOnce(t, addr, &reverted)
			}
			env := map[string]string{}
			for k, v := range f.env {
				env[k] = v
			}
			env["NOMAD_ADDR"] = addr
			rec, stderr, code := f.rollbackWith(ctx, env, func(d *deploy.Deployer) { d.Patience = 2 * time.Second }, "dev", 0)
			if code != tt.wantCode {
				t.Errorf("exit %d (%s), want %d", code, rec.Outcome, tt.wantCode)
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not say %q:\n%s", want, stderr)
				}
			}
			// What Nomad shows, read past the proxy.
			vs := f.versions()
			if got := *vs[0].Version == 2; got != tt.wantVersion {
				t.Fatalf("Nomad has version 2: %v (newest %d), want %v", got, *vs[0].Version, tt.wantVersion)
			}
			if tt.wantVersion {
				tagged := vs[0].VersionTag != nil && vs[0].VersionTag.Name == "v2"
				if tagged != tt.wantTag {
					t.Errorf("version 2 tagged v2: %v, want %v", tagged, tt.wantTag)
				}
				if img := vs[0].Meta[release.MetaImageDigest]; img != first.ImageDigest {
					t.Errorf("version 2 runs %s, want v0's %s", img, first.ImageDigest)
				}
			}
		})
	}
}

// TestNoChangeIsOnlyForAStableVersion: a release that never became healthy
// is submitted again once Nomad reaped its deployment (after
// deployment_gc_threshold, 1 h; `nomad system gc` here). Before, that said
// "No change: ... already runs", exit 0. The forced gc reaps every
// finished deployment of the stack, so this test does not run in parallel.
func TestNoChangeIsOnlyForAStableVersion(t *testing.T) {
	f := newFixture(t)
	_, bad := releaseImages(t, f.stack)
	f.writeEnv("dev", redistest.Start(t), 1, `min_healthy_time = "1s"
healthy_deadline = "8s"
progress_deadline = "30s"`)
	if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", bad); code != exitFailed {
		t.Fatalf("first release of a broken image: exit %d (%s), want %d", code, rec.Outcome, exitFailed)
	}
	// Nomad reaps a finished deployment once none of its allocations runs:
	// here once the failing instance used up its restarts (the default
	// policy, 2 in 30 m, 15 s apart) and was rescheduled.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if err := f.nomad.System().GarbageCollect(); err != nil {
			t.Fatal(err)
		}
		dep, _, err := f.nomad.Jobs().LatestDeployment(f.job, nil)
		if err != nil {
			t.Fatal(err)
		}
		if dep == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment %s (%s) not reaped by a forced gc after 3 min", dep.ID, dep.Status)
		}
		time.Sleep(3 * time.Second)
	}
	rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", bad)
	if code != exitFailed || rec.Outcome != deploy.Failed || !strings.Contains(rec.Detail, "never marked it stable") {
		t.Errorf("the same broken release again: exit %d, outcome %q, detail %q; want %d, failed, never stable\n%s",
			code, rec.Outcome, rec.Detail, exitFailed, stderr)
	}
	if n := len(f.versions()); n != 1 {
		t.Errorf("%d versions, want 1: nothing registered", n)
	}
}

// TestCanariesWaitingForPromotionEndTheWatch: with auto_promote = false,
// Nomad neither promotes healthy canaries nor fails their deployment.
// submit ends, saying so and naming the command; the next release is a
// conflict naming it too; deployer deployment gives either verdict. Before,
// submit watched for ever.
func TestCanariesWaitingForPromotionEndTheWatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	one, two := imageVariant(t, f.stack, 1), imageVariant(t, f.stack, 2)
	f.writeEnv("dev", redistest.Start(t), 1, `canary = 1
auto_promote = false
auto_revert = true
min_healthy_time = "1s"
healthy_deadline = "30s"`)
	if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", good); code != exitOK {
		t.Fatalf("first release: exit %d (%s)", code, rec.Outcome)
	}
	awaits := func(image string) {
		t.Helper()
		start := time.Now()
		rec, code, stderr := submitJSON(t, f, "-env", "dev", "-image", image)
		if code != exitUnknown || rec.Outcome != deploy.AwaitingPromotion {
			t.Fatalf("release with a canary awaiting promotion: exit %d, outcome %q; want %d, %s", code, rec.Outcome, exitUnknown, deploy.AwaitingPromotion)
		}
		for _, want := range []string{"waits for a verdict", "deployer deployment -env dev promote", "deployer deployment -env dev fail"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr does not say %q:\n%s", want, stderr)
			}
		}
		if took := time.Since(start); took > time.Minute {
			t.Errorf("the watch took %s", took)
		}
	}
	// status, of the environment and of them all, says so and names the
	// command while the canaries wait, and no more once promoted.
	statusSays := func(waiting bool) {
		t.Helper()
		one, _, _ := f.deployer("status", "-env", "dev")
		all, _, _ := f.deployer("status")
		js, _, _ := f.deployer("status", "-env", "dev", "-json")
		t.Logf("status -env dev:\n%s\nstatus:\n%s", one, all)
		var st deploy.Status
		if err := json.Unmarshal([]byte(js), &st); err != nil {
			t.Fatalf("status -json printed %q: %v", js, err)
		}
		for _, c := range []struct{ what, out, want string }{
			{"status -env dev", one, "waits for a verdict"},
			{"status -env dev", one, "deployer deployment -env dev promote"},
			{"status", all, "canaries await promotion"},
			{"status", all, "deployer deployment -env dev fail"},
		} {
			if strings.Contains(c.out, c.want) != waiting {
				t.Errorf("canaries waiting: %v, but %s saying %q: %v, want %v:\n%s", waiting, c.what, c.want, !waiting, waiting, c.out)
			}
		}
		if said := st.Deployment != nil && st.Deployment.AwaitingPromotion != ""; said != waiting {
			t.Errorf("canaries waiting: %v, but status -json says awaiting_promotion: %v (%+v)", waiting, said, st.Deployment)
		}
	}
	awaits(one)
	statusSays(true)
	if _, stderr, code := f.deployer("submit", "-env", "dev", "-image", two, "-detach"); code != exitConflict || !strings.Contains(stderr, "deployer deployment -env NAME promote") {
		t.Errorf("a release while canaries wait: exit %d, want %d naming the verdicts:\n%s", code, exitConflict, stderr)
	}
	out, _, code := f.deployer("deployment", "-env", "dev", "-json", "promote")
	var rec deploy.Record
	if err := json.Unmarshal([]byte(out), &rec); err != nil || code != exitOK || rec.Outcome != deploy.Succeeded || rec.Release != "v1" {
		t.Fatalf("promote: exit %d, %+v (%v); want %d, v1 succeeded", code, rec, err, exitOK)
	}
	if v := f.versions()[0]; *v.Version != 1 || !*v.Stable {
		t.Errorf("after promote the job is at version %d, stable %v; want 1, stable", *v.Version, *v.Stable)
	}
	statusSays(false)
	awaits(two)
	out, _, code = f.deployer("deployment", "-env", "dev", "-json", "fail")
	rec = deploy.Record{}
	if err := json.Unmarshal([]byte(out), &rec); err != nil || code != exitAutoReverted || rec.RevertedTo == nil || *rec.RevertedTo != 1 {
		t.Errorf("fail: exit %d, %+v (%v); want %d, reverted to version 1", code, rec, err, exitAutoReverted)
	}
	// Nomad's revert to v1 is a new version with a canary of its own, which
	// waits for promotion too.
	if _, stderr, code := f.deployer("deployment", "-env", "dev", "promote"); code != exitOK {
		t.Errorf("promote of the revert's canary: exit %d, want %d:\n%s", code, exitOK, stderr)
	}
	if _, stderr, code := f.deployer("deployment", "-env", "dev", "promote"); code != exitError || !strings.Contains(stderr, "no deployment under way") {
		t.Errorf("promote with nothing waiting: exit %d, want %d:\n%s", code, exitError, stderr)
	}
}

// TestAReleaseWhoseDeploymentHasNotStartedHoldsOffTheNext: between a
// register and the scheduler's handling of its evaluation, Nomad shows no
// deployment; submit and gc must not take that for idle. The eval broker
// is paused to hold that moment open, so this test does not run in
// parallel: no other test's deployment waits on it.
func TestAReleaseWhoseDeploymentHasNotStartedHoldsOffTheNext(t *testing.T) {
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	other := imageVariant(t, f.stack, 1)
	f.writeEnv("dev", redistest.Start(t), 1, "")
	nc, _ := stacktest.Clients(t, f.stack)
	pause := func(paused bool) {
		t.Helper()
		cfg, _, err := nc.Operator().SchedulerGetConfiguration(nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.SchedulerConfig.PauseEvalBroker = paused
		if _, _, err := nc.Operator().SchedulerSetConfiguration(cfg.SchedulerConfig, nil); err != nil {
			t.Fatal(err)
		}
	}
	pause(true)
	var once sync.Once
	resume := func() { once.Do(func() { pause(false) }) }
	t.Cleanup(resume)

	if _, _, code := f.deployer("submit", "-env", "dev", "-image", good, "-detach"); code != exitOK {
		t.Fatalf("detached submit: exit %d", code)
	}
	_, stderr, code := f.deployer("submit", "-env", "dev", "-image", other, "-detach")
	if code != exitConflict || !strings.Contains(stderr, "waits for Nomad's scheduler") {
		t.Errorf("submit right after a detached one: exit %d, want %d, the pending evaluation named:\n%s", code, exitConflict, stderr)
	}
	if _, stderr, code := f.deployer("gc", "-env", "dev"); code != exitConflict {
		t.Errorf("gc right after a detached submit: exit %d, want %d:\n%s", code, exitConflict, stderr)
	}
	if n := len(f.versions()); n != 1 {
		t.Errorf("%d versions, want the detached one only", n)
	}
	resume()
	if rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", other, "-wait", "2m"); code != exitOK || rec.Release != "v1" {
		t.Errorf("submit -wait once the scheduler runs: exit %d, %s %s; want %d, v1", code, rec.Release, rec.Outcome, exitOK)
	}
}

// TestSubmitPlansAgainWhenTheJobMovedBeforeItsLock: a "no change" planned
// before the lock is checked under it. Another release lands and ends
// between this submit's plan and its lock; before, the submit answered
// "No change" while the other release ran.
func TestSubmitPlansAgainWhenTheJobMovedBeforeItsLock(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	other := imageVariant(t, f.stack, 1)
	f.writeEnv("dev", redistest.Start(t), 1, "")
	first, code, _ := submitJSON(t, f, "-env", "dev", "-image", good)
	if code != exitOK {
		t.Fatalf("first release: exit %d", code)
	}
	var plans int
	opts := deploy.SubmitOptions{OnPlan: func(p *deploy.Plan) {
		plans++
		if plans == 1 {
			if p.Changed {
				t.Errorf("the first plan of the running release says it changes")
			}
			// Before this submit takes the lock: another release, to its end.
			if _, code, _ := submitJSON(t, f, "-env", "dev", "-image", other); code != exitOK {
				t.Errorf("the other release: exit %d", code)
			}
		}
	}}
	rec, _, code := f.submitWith(context.Background(), f.env, nil, opts, "dev", good)
	if code != exitOK || rec.Outcome != deploy.Succeeded || rec.Release != "v2" {
		t.Errorf("submit of v0's release after another landed: exit %d, %s %s; want %d, v2 succeeded", code, rec.Release, rec.Outcome, exitOK)
	}
	if img := f.versions()[0].Meta[release.MetaImageDigest]; img != first.ImageDigest {
		t.Errorf("the job runs %s, want the resubmitted %s", img, first.ImageDigest)
	}
}

// TestALostLockIsSaid: the deploy lock's Consul session ends while submit
// watches (here destroyed, as a TTL that ran out would end it). Before,
// the lost channel was dropped and nothing was said.
func TestALostLockIsSaid(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	f.writeEnv("dev", redistest.Start(t), 1, `min_healthy_time = "4s"
healthy_deadline = "30s"`)
	done := make(chan string)
	go func() {
		_, stderr, code := runCLI(t, f.dir, f.env, "submit", "-env", "dev", "-image", good)
		if code != exitOK {
			t.Errorf("submit: exit %d", code)
		}
		done <- stderr
	}()
	key := "counter/releases/.locks/default/" + f.job
	destroyed := false
	for !destroyed {
		select {
		case stderr := <-done:
			t.Fatalf("submit ended before its lock could be taken from it:\n%s", stderr)
		case <-time.After(50 * time.Millisecond):
		}
		// Once the version is registered: before, a lost lock stops the
		// submit instead (TestALostLockStopsASubmitBeforeItWrites).
		if _, _, err := f.nomad.Jobs().Info(f.job, nil); err != nil {
			continue
		}
		p, _, err := f.kv.KV().Get(key, nil)
		if err != nil || p == nil || p.Session == "" {
			continue
		}
		if _, err := f.kv.Session().Destroy(p.Session, nil); err != nil {
			t.Fatal(err)
		}
		destroyed = true
	}
	if stderr := <-done; !strings.Contains(stderr, "lost the deploy lock") {
		t.Errorf("submit did not say it lost its lock:\n%s", stderr)
	}
}

// infoHook is Nomad's jobs API with a hook before each read of the job.
type infoHook struct {
	deploy.Jobs
	reads  int
	before func(read int)
}

func (h *infoHook) Info(id string, q *nomad.QueryOptions) (*nomad.Job, *nomad.QueryMeta, error) {
	h.reads++
	h.before(h.reads)
	return h.Jobs.Info(id, q)
}

// TestALostLockStopsASubmitBeforeItWrites: the lock's session ends after
// submit took the lock and before it wrote anything (its second read of
// the job is the one under the lock). Before, the lost lock went unnoticed
// and the submit registered while another deployer could hold the lock.
func TestALostLockStopsASubmitBeforeItWrites(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	f.writeEnv("dev", redistest.Start(t), 1, "")
	key := "counter/releases/.locks/default/" + f.job
	tweak := func(d *deploy.Deployer) {
		d.Jobs = &infoHook{Jobs: d.Jobs, before: func(read int) {
			if read != 2 {
				return
			}
			p, _, err := f.kv.KV().Get(key, nil)
			if err != nil || p == nil || p.Session == "" {
				t.Errorf("no lock held at the read under it: %v %v", p, err)
				return
			}
			if _, err := f.kv.Session().Destroy(p.Session, nil); err != nil {
				t.Error(err)
			}
			// The session's end deletes the lock's key; Consul's lock monitor,
			// a blocking read of that key, sees it go within milliseconds.
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if p, _, err := f.kv.KV().Get(key, nil); err == nil && p == nil {
					break
				}
			}
			time.Sleep(time.Second)
		}}
	}
	_, stderr, code := f.submitWith(context.Background(), f.env, tweak, deploy.SubmitOptions{}, "dev", good)
	if code != exitConflict || !strings.Contains(stderr, "lost the job's deploy lock") {
		t.Errorf("submit that lost its lock: exit %d, want %d saying so:\n%s", code, exitConflict, stderr)
	}
	if snaps := f.snapshots(); len(snaps) != 0 {
		t.Errorf("snapshots %v written after the lock was lost", snaps)
	}
	if _, _, err := f.nomad.Jobs().Info(f.job, nil); !isNotFound(err) {
		t.Errorf("job registered after the lock was lost (%v)", err)
	}
}
