package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/testsupport/envtest"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// TestNomadUIRevertBringsBackImageAndConfig is the Nomad UI path of a
// rollback, in a real browser: two releases that differ in image and in
// Redis port; on the job's Versions page, "Revert Version" on the first and
// its confirmation; then the Docker container the revert's deployment runs
// must be the first release's image, and the app must count in the first
// release's Redis.
func TestNomadUIRevertBringsBackImageAndConfig(t *testing.T) {
	t.Parallel()
	// Before chromium is looked up, which CI=true makes a failure.
	envtest.NeedsServers(t, "Nomad, Consul, Redis, Docker and chromium")
	chromium := envtest.LookPath(t, "chromium", "chromium")
	f := newFixture(t)
	var rs []released
	for i := range 2 {
		rdb := redistest.Start(t)
		// Counts apart (100, 200), so that an answer names the Redis, and
		// so the config, it came from.
		if err := rdb.Set("visitorCount", strconv.Itoa(100*(i+1))); err != nil {
			t.Fatal(err)
		}
		f.writeEnv("dev", rdb, 1, "")
		rec, code, _ := submitJSON(t, f, "-env", "dev", "-image", imageVariant(t, f.stack, i))
		if code != exitOK || rec.Release != fmt.Sprintf("v%d", i) {
			t.Fatalf("release %d: exit %d %+v", i, code, rec)
		}
		rs = append(rs, released{rec: rec, redis: rdb})
	}
	f.wantRunning(rs[1], "before the revert")

	revertInUI(t, f, chromium, 0)

	dep := f.waitForDeployment(2, 2*time.Minute)
	if dep.Status != "successful" {
		t.Fatalf("the revert's deployment %s is %s: %s", dep.ID, dep.Status, dep.StatusDescription)
	}
	// What runs: the image of the revert's container, from Docker; the
	// config, from the app's answer, counted in the first release's Redis
	// (101), not the second's (201).
	f.wantContainers(dep, rs[0], rs[1])
	f.wantRunning(rs[0], "after the revert in the Nomad UI")
}

// revertInUI reverts the fixture's job to version in the Nomad UI, in
// chromium: "Revert Version" on the version's block of the job's Versions
// page, and its confirmation.
func revertInUI(t *testing.T, f *fixture, chromium string, version int) {
	t.Helper()
	b := newBrowser(t, chromium)
	ui := f.stack.NomadAddr + "/ui/jobs/" + f.job + "@default"

	// With ACLs on, the UI acts with the token pasted at Settings > Tokens,
	// which keeps it in the origin's local storage: a person's token, from
	// the operator policy docs/secured-cluster.md gives. It is stored from a page of the
	// same origin that is not the UI: the UI, starting, may write its own
	// idea of the token after ours.
	if token := stacktest.OperatorToken(t, f.stack); token != "" {
		b.do("sign in with an operator token", chromedp.Navigate(f.stack.NomadAddr+"/v1/status/leader"),
			chromedp.Evaluate[chromedp.Void](fmt.Sprintf("window.localStorage.setItem('nomadTokenSecret', %q)", token)))
	}

	// The jobs list names the job by its ID, so dev and prod differ there.
	b.do("open the jobs list", chromedp.Navigate(f.stack.NomadAddr+"/ui/jobs"),
		chromedp.WaitVisible(fmt.Sprintf(`//a[normalize-space(.)=%q]`, f.job)))

	// The production build of the UI has no data-test attributes: find the
	// version's block by its heading, and its buttons by their words.
	block := fmt.Sprintf(`//section[contains(@class,"job-version")][.//header[starts-with(normalize-space(.), "Version #%d ")]]`, version)
	revert := block + `//div[contains(@class,"two-step-button")]//button[contains(normalize-space(.), "Revert Version")]`
	confirm := block + `//div[contains(@class,"two-step-button")]//button[normalize-space(.)="Yes, Revert Version"]`
	b.page, b.pageReady = ui+"/versions", `//section[contains(@class,"job-version")]`
	b.do("open the Versions page", chromedp.Navigate(b.page), chromedp.WaitVisible(revert))
	b.do(fmt.Sprintf("click Revert Version on version %d", version), chromedp.Click(revert), chromedp.WaitVisible(confirm))
	b.do("confirm", chromedp.Click(confirm))
}

// wantContainers checks that every running allocation the deployment dep
// placed runs, in its Docker container, the image want released, and not
// not's: the container's image ID, as Docker reports it, must be one whose
// registry digests include want's pinned reference. The job's spec says
// what Nomad was asked to run; the container is what it runs.
func (f *fixture) wantContainers(dep *nomad.Deployment, want, not released) {
	f.t.Helper()
	allocs, _, err := f.nomad.Deployments().Allocations(dep.ID, nil)
	if err != nil {
		f.t.Fatalf("allocations of deployment %s: %v", dep.ID, err)
	}
	running := 0
	for _, a := range allocs {
		if a.ClientStatus != nomad.AllocClientStatusRunning || a.DesiredStatus != nomad.AllocDesiredStatusRun {
			continue
		}
		running++
		// The docker driver labels each container with its allocation
		// (the task's name only when configured to); the job has one task
		// and host networking, so no pause container.
		ids, err := imagetest.Docker("ps", "-q", "--no-trunc", "--filter", "label=com.hashicorp.nomad.alloc_id="+a.ID)
		if err != nil {
			f.t.Fatal(err)
		}
		if strings.Count(ids, "\n") != 0 || ids == "" {
			f.t.Errorf("allocation %s: Docker runs containers %q, want the one of its task", a.ID, ids)
			continue
		}
		image, err := imagetest.Docker("container", "inspect", "-f", "{{.Image}}", ids)
		if err != nil {
			f.t.Fatal(err)
		}
		digests, err := imagetest.Docker("image", "inspect", "-f", `{{join .RepoDigests "\n"}}`, image)
		if err != nil {
			f.t.Fatal(err)
		}
		got := strings.Fields(digests)
		if !slices.Contains(got, want.rec.Image) || slices.Contains(got, not.rec.Image) {
			f.t.Errorf("allocation %s: container %.12s runs image %s with digests %q, want %s's %s (not %s's %s)",
				a.ID, ids, image, got, want.rec.Release, want.rec.Image, not.rec.Release, not.rec.Image)
		} else {
			f.t.Logf("allocation %s: container %.12s runs image %s = %s", a.ID, ids, image, want.rec.Image)
		}
	}
	if running == 0 {
		f.t.Errorf("deployment %s has no running allocation (%d in all)", dep.ID, len(allocs))
	}
}

// waitForDeployment waits until job version's deployment ends.
func (f *fixture) waitForDeployment(version uint64, within time.Duration) *nomad.Deployment {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for {
		deps, _, err := f.nomad.Jobs().Deployments(f.job, false, nil)
		if err == nil {
			for _, d := range deps {
				if d.JobVersion == version && d.Status != "running" && d.Status != "pending" {
					return d
				}
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("no finished deployment of %s version %d after %s (%v)", f.job, version, within, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// browser is one headless Chromium tab for one test.
type browser struct {
	t   *testing.T
	ctx context.Context
	// step is the browser step last begun, which names a failure's
	// screenshot.
	step string
	// page, when set, is opened and saved too on failure, once what
	// pageReady selects shows (the Versions page, which the UI leaves for
	// the job's overview after a revert).
	page, pageReady string
}

func newBrowser(t *testing.T, chromium string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // the tests run as root in CI
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1600),
		chromedp.UserDataDir(t.TempDir()),
		// No calls off this machine: nothing but the page's own.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	// The first run starts the browser and ties it to its context: this
	// one, not a step's, whose timeout would close it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	b := &browser{t: t, ctx: ctx, step: "start"}
	// On any failure, a browser step's or another check's (a Fatalf in
	// waitForDeployment or appURL included), the page as it was. Cleanups
	// run last registered first, so this one runs while the browser is
	// still open, and before the fixture's, while the job still exists.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		b.save("failed after " + b.step)
		if b.page == "" {
			return
		}
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, chromedp.Navigate(b.page), chromedp.WaitVisible(b.pageReady)); err != nil {
			t.Logf("browser: reopen %s to save it: %v", b.page, err)
			return
		}
		b.save("failed, page reopened")
	})
	return b
}

// do runs steps, bounded in time (the UI long-polls, so nothing waits for
// the page to go idle). On failure newBrowser's cleanup saves what the page
// showed.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	b.t.Logf("browser: %s", what)
	b.step = what
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

// save writes a screenshot and the HTML of the page to the test artifacts
// folder ($TEST_ARTIFACTS, else .artifacts in the repository), and logs where.
func (b *browser) save(what string) {
	b.t.Helper()
	dir := os.Getenv("TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(imagetest.RepoRoot(b.t), ".artifacts")
	}
	name := regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(b.t.Name()+"-"+what, "-")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Logf("artifacts: %v", err)
		return
	}
	// A fresh context: the step's own may be what ran out.
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		path := filepath.Join(dir, name+".png")
		if err := os.WriteFile(path, png, 0o644); err == nil {
			b.t.Logf("screenshot of the page: %s", path)
		}
	}
	if html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html"))); err == nil {
		path := filepath.Join(dir, name+".html")
		if err := os.WriteFile(path, []byte(html), 0o644); err == nil {
			b.t.Logf("HTML of the page: %s", path)
		}
	}
}
