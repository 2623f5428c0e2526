package main

import (
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/release"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

// TestSimultaneousReleasesMakeOneVersionPerRound races two releases of one
// job, round after round: two submits, then a submit against a rollback.
// Each round makes exactly one new version; the other command is a conflict
// (exit 5); no deployment is cancelled; no snapshot is left that no version
// uses.
func TestSimultaneousReleasesMakeOneVersionPerRound(t *testing.T) {
	t.Parallel()
	const rounds = 20
	f := newFixture(t)
	good, _ := releaseImages(t, f.stack)
	redis := []*redistest.Server{redistest.Start(t), redistest.Start(t), redistest.Start(t)}
	// A deployment lasts at least min_healthy_time after its instance
	// starts, longer than the longest delay between the two commands, so
	// the second always begins while the first still runs: a round that
	// did not overlap would test nothing.
	const (
		step   = 300 * time.Millisecond
		update = "min_healthy_time = \"3s\"\nhealthy_deadline = \"20s\""
	)
	// running is the Redis the current release counts in; each round's
	// releases name the other two, so both are real changes.
	running := 0
	f.writeEnv("a", redis[running], 1, update)
	if rec, code, _ := submitJSON(t, f, "-env", "a", "-image", good); code != exitOK {
		t.Fatalf("first release: exit %d %+v", code, rec)
	}

	// race runs both commands, the second after a delay that goes from 0
	// to 4 steps over the rounds: at once they collide on the lock; a moment
	// later the first has registered and its deployment runs, which the
	// second must not cancel. It fails the test when the two did not
	// overlap.
	// The second operator, with a checkout of their own.
	g := f.checkout()
	// race runs cmds[i] in ops[i]'s checkout, both at once.
	race := func(t *testing.T, round int, ops [2]*fixture, cmds [2][]string) []int {
		t.Helper()
		codes := make([]int, 2)
		var start, end [2]time.Time
		var wg sync.WaitGroup
		for i, args := range cmds {
			wg.Go(func() {
				if i == 1 {
					time.Sleep(time.Duration(round%5) * step)
				}
				start[i] = time.Now()
				_, _, codes[i] = ops[i].deployer(args...)
				end[i] = time.Now()
			})
		}
		wg.Wait()
		if !start[1].Before(end[0]) || !start[0].Before(end[1]) {
			t.Fatalf("round %d: the commands did not overlap (%v–%v and %v–%v): make the deployment longer",
				round, start[0].Format(time.StampMilli), end[0].Format(time.StampMilli),
				start[1].Format(time.StampMilli), end[1].Format(time.StampMilli))
		}
		slices.Sort(codes)
		return codes
	}
	check := func(t *testing.T, round int, what string, codes []int, versionsBefore int) {
		t.Helper()
		versions := f.versions()
		if !slices.Equal(codes, []int{exitOK, exitConflict}) || len(versions) != versionsBefore+1 {
			t.Fatalf("round %d, %s: exit codes %v, %d new versions; want [0 5] and one", round, what, codes, len(versions)-versionsBefore)
		}
		deps, _, err := f.nomad.Jobs().Deployments(f.job, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range deps {
			if d.Status == "cancelled" {
				t.Fatalf("round %d, %s: deployment %s of version %d was cancelled: %s", round, what, d.ID, d.JobVersion, d.StatusDescription)
			}
		}
		used := map[string]bool{}
		for _, v := range versions {
			used[v.Meta[release.MetaConfigPath]+"/"] = true
		}
		for _, s := range f.snapshots() {
			if !used[s] {
				t.Fatalf("round %d, %s: snapshot %s is used by no version", round, what, s)
			}
		}
	}

	t.Run("submit against submit", func(t *testing.T) {
		for round := range rounds {
			a, b := (running+1)%3, (running+2)%3
			f.writeEnv("a", redis[a], 1, update)
			g.writeEnv("b", redis[b], 1, update)
			before := len(f.versions())
			codes := race(t, round, [2]*fixture{f, g}, [2][]string{
				{"submit", "-env", "a", "-image", good},
				{"submit", "-env", "b", "-image", good},
			})
			check(t, round, "submit against submit", codes, before)
			running = f.runningRedis(redis)
		}
	})
	t.Run("submit against rollback", func(t *testing.T) {
		for round := range rounds {
			// The rollback goes to the newest older release, which counts in
			// another Redis; the submit names the third.
			prev := f.previousRedis(redis)
			other := 3 - running - prev
			f.writeEnv("a", redis[other], 1, update)
			before := len(f.versions())
			codes := race(t, round, [2]*fixture{f, f}, [2][]string{
				{"submit", "-env", "a", "-image", good},
				{"rollback", "-env", "a"},
			})
			check(t, round, "submit against rollback", codes, before)
			running = f.runningRedis(redis)
		}
	})
}

// runningRedis is the index of the Redis the job's current version counts in.
func (f *fixture) runningRedis(redis []*redistest.Server) int {
	f.t.Helper()
	return f.redisOf(f.versions()[0], redis)
}

// previousRedis is the Redis of the newest stable version older than the
// current one that counts elsewhere: where a rollback goes.
func (f *fixture) previousRedis(redis []*redistest.Server) int {
	f.t.Helper()
	vs := f.versions()
	cur := f.redisOf(vs[0], redis)
	for _, v := range vs[1:] {
		if r := f.redisOf(v, redis); r != cur && v.Stable != nil && *v.Stable {
			return r
		}
	}
	f.t.Fatal("no earlier stable release counts in another Redis")
	return -1
}

// redisOf is the index of the Redis a job version counts in, read from its
// config snapshot.
func (f *fixture) redisOf(v *nomad.Job, redis []*redistest.Server) int {
	f.t.Helper()
	port := f.snapshot(v.Meta[release.MetaConfigPath])["PORT"]
	for i, r := range redis {
		if strconv.Itoa(r.Port) == port {
			return i
		}
	}
	f.t.Fatalf("version %d counts in no Redis of the test (PORT %q)", *v.Version, port)
	return -1
}
