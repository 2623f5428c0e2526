package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/release"
)

// A release of an environment with an analysis block is registered with
// auto_promote = false, so that the deployer judges its canary. Once it has
// passed, the version still says auto_promote = false, and whatever goes back
// to it outside the deployer (nomad job revert, a revert in the Nomad UI,
// Nomad's own auto_revert after a later release fails) starts a deployment
// whose canary waits for a promotion nobody gives. So the deployer registers
// the judged release once more, changed in update.auto_promote only, as its
// own version tagged with its own number: the judged copy. Going back to it
// promotes itself, and Nomad's auto_revert (to the newest stable version)
// lands on it.
//
// A release placed without a canary (the job's first version: nothing ran
// before it to judge it against) gets one too, once its deployment has
// succeeded: it serves all the traffic, as a promoted canary's release
// does, and it is the release a first rollback goes back to. So does the
// version a deployer rollback makes, once its canary (promoted as judged
// before) has turned stable, so that Nomad's auto_revert after a later
// failed release lands on a version that promotes itself.

// judgedCopy registers the judged copy of rec's release, once its
// deployment succeeded with its canary promoted by the analysis (or by a
// rollback, as judged before) or, in an environment with an analysis
// block, with no canary placed; and watches the copy's deployment to the
// end. It never fails the release: what goes wrong is a warning in rec,
// saying what a revert to rec's version then needs.
func (d *Deployer) judgedCopy(ctx context.Context, rec *Record, lost <-chan struct{}) {
	if rec.Outcome != Succeeded || rec.Version == nil || copyReason(rec) == "" {
		return
	}
	warn := func(what string, err error) {
		w := fmt.Sprintf("%s is released, but its judged copy (the same job with auto_promote = true) %s: %v; "+
			"a nomad job revert or a Nomad UI revert to %s starts a canary that waits for a promotion (deployer deployment -env %s promote, or deployer analyze -env %s)",
			rec.Release, what, err, rec.Release, rec.Environment, rec.Environment)
		rec.Warnings = append(rec.Warnings, w)
		fmt.Fprintf(d.Progress, "warning: %s\n", w)
	}
	cur, err := d.current(ctx, rec.Namespace, rec.Job)
	if err == nil && (cur == nil || cur.Version == nil || *cur.Version != *rec.Version) {
		err = fmt.Errorf("job %s no longer runs version %d", rec.Job, *rec.Version)
	}
	if err != nil {
		warn("was not registered", err)
		return
	}
	if !waitsForPromotion(cur) {
		return
	}
	sub, cp, err := d.autoPromotedSubmission(ctx, rec)
	if err != nil {
		warn("was not registered", err)
		return
	}
	resp, _, err := d.Jobs.RegisterOpts(cp, &nomad.RegisterOptions{EnforceIndex: true, ModifyIndex: *cur.JobModifyIndex, Submission: sub},
		(&nomad.WriteOptions{Namespace: rec.Namespace}).WithContext(ctx))
	if err != nil {
		warn("was not registered", err)
		return
	}
	version, err := d.versionAt(ctx, rec.Namespace, rec.Job, resp.JobModifyIndex)
	if err != nil {
		warn("was registered but not found", err)
		return
	}
	name := release.Name(version)
	if _, err := d.Jobs.TagVersion(rec.Job, version, name, judgedDescription(rec),
		(&nomad.WriteOptions{Namespace: rec.Namespace}).WithContext(ctx)); err != nil {
		warn(fmt.Sprintf("was registered as version %d but not tagged %s", version, name), err)
		return
	}
	rec.JudgedCopy, rec.JudgedCopyVersion = name, &version
	fmt.Fprintf(d.Progress, "==> registered the judged copy of %s as %s (job version %d, auto_promote on: a revert to it needs no promotion)\n", rec.Release, name, version)
	start := time.Now()
	w, err := d.watch(ctx, rec.Namespace, rec.Job, version, resp.EvalID, lost, nil)
	if err == nil && w.Outcome != Succeeded {
		err = fmt.Errorf("its deployment ended %s: %s", w.Outcome, w.Detail)
	}
	if err != nil {
		warn(fmt.Sprintf("%s did not turn stable", name), err)
		return
	}
	fmt.Fprintf(d.Progress, "==> the judged copy %s is stable after %s\n", name, time.Since(start).Round(100*time.Millisecond))
}

// autoPromotedSubmission renders rec's version again from the submission
// Nomad keeps of it, with its update variable's auto_promote on, and returns
// that submission and job. Rendered, not copied from the registered job:
// Nomad adds its implied constraints to a job at each register, so the
// registered job sent back would carry them twice, and the copy would differ
// from the release in more than auto_promote. The submission says what the
// copy runs, so the Nomad UI's edit of it keeps auto_promote on.
func (d *Deployer) autoPromotedSubmission(ctx context.Context, rec *Record) (*nomad.JobSubmission, *nomad.Job, error) {
	sub, _, err := d.Jobs.Submission(rec.Job, int(*rec.Version), (&nomad.QueryOptions{Namespace: rec.Namespace}).WithContext(ctx))
	if err != nil || sub == nil || sub.Variables == "" {
		return nil, nil, fmt.Errorf("Nomad at %s keeps no submission of version %d to render it from (%v)", d.NomadAddr, *rec.Version, err)
	}
	// release.Variables writes the update variable one field a line.
	const off, on = "  auto_promote = false\n", "  auto_promote = true\n"
	if !strings.Contains(sub.Variables, off) {
		return nil, nil, fmt.Errorf("the variables of version %d set no %q", *rec.Version, strings.TrimSpace(off))
	}
	cp := *sub
	cp.Variables = strings.Replace(sub.Variables, off, on, 1)
	job, err := d.Jobs.ParseHCLOpts(&nomad.JobsParseRequest{JobHCL: cp.Source, Variables: cp.Variables, Canonicalize: true})
	if err != nil {
		return nil, nil, fmt.Errorf("render version %d with auto_promote on with Nomad at %s: %w", *rec.Version, d.NomadAddr, err)
	}
	if waitsForPromotion(job) {
		return nil, nil, fmt.Errorf("version %d rendered with auto_promote on still has a canary with auto_promote off", *rec.Version)
	}
	return &cp, job, nil
}

// copyReason says why rec's release passed, for its judged copy's tag;
// "" when it gets no copy: its canary was not promoted by the deployer
// (failed, promoted by hand, left waiting), or it was placed without one
// in an environment without an analysis block, whose auto_promote off
// (when set) is a promotion by hand the operator asked for.
func copyReason(rec *Record) string {
	switch a := rec.Analysis; {
	case a != nil && a.Verdict == Promote:
		return "judged: " + a.Reason
	case a == nil && rec.judging != nil && rec.judging.analysis != nil:
		return "placed without a canary (nothing ran before it to judge it against) and stable"
	}
	return ""
}

// judgedDescription is the judged copy's tag description: the release it
// copies, why it passed, and what the copy is for.
func judgedDescription(rec *Record) string {
	reason := copyReason(rec)
	if len(reason) > 300 {
		reason = reason[:300] + "..."
	}
	return fmt.Sprintf("%s %s; auto_promote on so a revert needs no promotion", rec.Release, reason)
}

// waitsForPromotion reports whether a canary of job waits for a promotion
// by hand: a group with canaries and auto_promote off.
func waitsForPromotion(job *nomad.Job) bool {
	for _, tg := range job.TaskGroups {
		u := effectiveUpdate(job, tg)
		if u.Canary != nil && *u.Canary > 0 && (u.AutoPromote == nil || !*u.AutoPromote) {
			return true
		}
	}
	return false
}

// autoPromoted is a copy of job with auto_promote on in every group.
func autoPromoted(job *nomad.Job) (*nomad.Job, error) {
	b, err := json.Marshal(job)
	if err != nil {
		return nil, fmt.Errorf("copy job %s: %w", *job.ID, err)
	}
	var cp nomad.Job
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("copy job %s: %w", *job.ID, err)
	}
	on := true
	for _, tg := range cp.TaskGroups {
		if tg.Update != nil {
			tg.Update.AutoPromote = &on
		}
	}
	if cp.Update != nil {
		cp.Update.AutoPromote = &on
	}
	return &cp, nil
}

// judgedPair says a and b are one release, judged and its judged copy (in
// either order): the same meta, differing in auto_promote alone.
func judgedPair(a, b *nomad.Job) bool {
	if !maps.Equal(a.Meta, b.Meta) || a.Meta[release.MetaConfigHash] == "" {
		return false
	}
	ds := releaseDiff(a, b)
	for _, d := range ds {
		if !strings.HasSuffix(d.Field, "update.auto_promote") {
			return false
		}
	}
	return len(ds) > 0
}

// judgedReleaseOf finds among versions (newest first) the release that c
// is the judged copy of: an older version that waits for a promotion and
// is c with auto_promote off. Nil when c is no judged copy.
func judgedReleaseOf(versions []*nomad.Job, c *nomad.Job) *nomad.Job {
	if !isOwnRelease(c) {
		return nil
	}
	for _, v := range versions {
		if *v.Version < *c.Version && waitsForPromotion(v) && judgedPair(v, c) {
			return v
		}
	}
	return nil
}

// judgedCopyOf finds the judged copy of target among versions (newest
// first): a newer version the deployer tagged with its own number, stable,
// that is target with auto_promote on. Nil when there is none.
func judgedCopyOf(versions []*nomad.Job, target *nomad.Job) *nomad.Job {
	for _, v := range versions {
		if *v.Version <= *target.Version || !isOwnRelease(v) || v.Stable == nil || !*v.Stable {
			continue
		}
		if judgedPair(target, v) && !waitsForPromotion(v) {
			return v
		}
	}
	return nil
}
