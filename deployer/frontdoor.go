package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/kodekloud/counter/internal/deploy"
)

// urlPatience bounds how long a command waits for the environment's URL to
// answer after a release: the front door re-resolves Consul every second
// and checks an instance twice before it sends it users (docs/stack.md).
const urlPatience = 30 * time.Second

// callURL records the environment's URL in rec and, after a release that
// runs (succeeded, or already running), calls the app through it: GET
// /readyz, which counts no visit, until it answers 200 or urlPatience
// passes, saying on stderr what it waits for. A URL that does not answer is
// a warning, not a failed release: Nomad runs the release and Consul lists
// its instances, and going back would not mend the front door.
func callURL(ctx context.Context, sh *shell, rec *deploy.Record, err error, url string) {
	if rec == nil || url == "" {
		return
	}
	rec.URL = url
	if err != nil || (rec.Outcome != deploy.Succeeded && rec.Outcome != deploy.NoChange) {
		return
	}
	target := strings.TrimSuffix(url, "/") + "/readyz"
	fmt.Fprintf(sh.stderr, "==> calling %s through its URL: GET %s (up to %s)\n", rec.Job, target, urlPatience)
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, urlPatience)
	defer cancel()
	client := &http.Client{Timeout: 3 * time.Second}
	last := ""
	for {
		status, err := getStatus(ctx, client, target)
		if err == nil && status == http.StatusOK {
			rec.URLCheck = fmt.Sprintf("answered 200 after %.1fs", time.Since(start).Seconds())
			fmt.Fprintf(sh.stderr, "    %s %s\n", url, rec.URLCheck)
			return
		}
		if err != nil {
			last = err.Error()
		} else {
			last = http.StatusText(status)
			last = fmt.Sprintf("%d %s", status, last)
		}
		select {
		case <-ctx.Done():
			rec.URLCheck = fmt.Sprintf("no answer 200 within %s: %s", urlPatience, last)
			fmt.Fprintf(sh.stderr, "warning: %s: %s (is the front door up? make up starts it)\n", url, rec.URLCheck)
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// getStatus is the status of GET url, its body read and closed.
func getStatus(ctx context.Context, c *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, nil
}

// urlNote is " (CHECK)" for a URL's check, or nothing.
func urlNote(check string) string {
	if check == "" {
		return ""
	}
	return " (" + check + ")"
}

// frontDoorPatience bounds how long status waits for a front door's
// answer: HAProxy answers at once, even with no instance behind it (503).
const frontDoorPatience = 2 * time.Second

// frontDoorState calls url's /readyz once, which counts no visit: "up" for
// an answer of any HTTP status (a 503 means no instance passes, which the
// health column says, not that the front door is down), "down: WHY" for no
// answer, "" when there is no url.
func frontDoorState(ctx context.Context, url string) string {
	if url == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, frontDoorPatience)
	defer cancel()
	if _, err := getStatus(ctx, &http.Client{}, strings.TrimSuffix(url, "/")+"/readyz"); err != nil {
		return "down: " + err.Error()
	}
	return "up"
}

// callFrontDoors fills in each row's FrontDoor, all at once, so that
// status waits frontDoorPatience at most however many are down.
func callFrontDoors(ctx context.Context, rows []deploy.Row) {
	var wg sync.WaitGroup
	for i := range rows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rows[i].FrontDoor = frontDoorState(ctx, rows[i].URL)
		}()
	}
	wg.Wait()
}

// down says whether a front door state is down.
func down(state string) bool { return strings.HasPrefix(state, "down") }
