package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/deploy"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// TestFrontDoorJobRunsAsWritten runs the production front door as
// docs/frontdoor.md shows it: the job there is jobs/frontdoor.nomad.hcl
// byte for byte, and the page's commands, run as written on a stack with
// ACLs on whose Consul agent has no DNS token, make that token, mark the
// node and run the job. Then a release through the deployer answers at
// the front door's URL, a second release and an instance killed under a
// load through the URL lose no request (and Redis counts every answer
// once), and the job's
// Prometheus exporter counts the frontend's requests.
func TestFrontDoorJobRunsAsWritten(t *testing.T) {
	t.Parallel()
	root := imagetest.RepoRoot(t)
	page := filepath.Join(root, "docs", "frontdoor.md")
	spec, err := os.ReadFile(filepath.Join(root, "jobs", "frontdoor.nomad.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if shown := fencedAfter(t, page, "<!-- jobs/frontdoor.nomad.hcl, checked byte for byte by TestFrontDoorJobRunsAsWritten -->", "hcl"); shown+"\n" != string(spec) {
		t.Fatalf("docs/frontdoor.md shows a job that is not jobs/frontdoor.nomad.hcl: copy the file into the page")
	}
	block := fencedAfter(t, page, "<!-- run by TestFrontDoorJobRunsAsWritten -->", "sh")

	// A stack of its own, with the deployer's tokens and no front door.
	s := stacktest.StartOwnFrontDoor(t, t.TempDir())
	nc, cc := stacktest.Clients(t, s)
	// As on a cluster whose Consul answers DNS questions to nobody yet:
	// the agent's DNS token (the stack's config names it) must not exist.
	self, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.DNSToken()})
	if err != nil {
		t.Fatal(err)
	}
	if tok, _, err := self.ACL().TokenReadSelf(nil); err == nil {
		if _, err := cc.ACL().TokenDelete(tok.AccessorID, nil); err != nil {
			t.Fatal(err)
		}
	} else if !strings.Contains(err.Error(), "ACL not found") {
		t.Fatalf("the stack's Consul DNS token: %v", err)
	}

	job := stacktest.Name(t, "prodfd")
	f := fixtureOf(t, s, job)
	stacktest.GrantJob(t, s, job)
	httpAddr, statsAddr := closedAddr(t), closedAddr(t)
	f.url = "http://" + httpAddr + "/"
	nodes, _, err := nc.Nodes().List(nil)
	if err != nil || len(nodes) == 0 {
		t.Fatalf("the stack's Nomad nodes: %v %v", nodes, err)
	}
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	bin := stacktest.Binaries(t)
	path := t.TempDir()
	for name, target := range map[string]string{"nomad": bin.Nomad, "consul": bin.Consul} {
		if err := os.Symlink(target, filepath.Join(path, name)); err != nil {
			t.Fatal(err)
		}
	}
	port := func(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", block)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PATH="+path+":"+os.Getenv("PATH"),
		"NOMAD_ADDR="+s.NomadAddr, "NOMAD_TOKEN="+s.NomadToken,
		"CONSUL_HTTP_ADDR="+s.ConsulAddr, "CONSUL_HTTP_TOKEN="+s.ConsulToken,
		"LB_NODES="+strings.Join(ids, " "),
		"NOMAD_VAR_service="+job, "NOMAD_VAR_http_port="+port(httpAddr), "NOMAD_VAR_stats_port="+port(statsAddr),
		`NOMAD_VAR_consul_dns=["127.0.0.1:`+strconv.Itoa(s.Ports.ConsulDNS)+`"]`)
	t.Cleanup(func() { _, _, _ = nc.Jobs().Deregister("frontdoor", true, nil) })
	if out, err := cmd.CombinedOutput(); err != nil {
		// Not the output: it holds the DNS token's secret.
		t.Fatalf("the commands of docs/frontdoor.md failed: %v (last line: %q)", err, lastLine(string(out)))
	}
	metrics := "http://" + statsAddr + "/metrics"
	if err := waitHTTP(metrics, time.Minute); err != nil {
		t.Fatalf("the front door job's exporter: %v; its allocations: %s", err, allocsOf(t, nc, "frontdoor"))
	}

	good, _ := releaseImages(t, s)
	rdb := redistest.Start(t)
	f.writeEnv("prod", rdb, 2, "min_healthy_time = \"1s\"\nhealthy_deadline = \"20s\"\nprogress_deadline = \"30s\"")
	rec, code, stderr := submitJSON(t, f, "-env", "prod", "-image", good)
	if code != exitOK || !strings.HasPrefix(rec.URLCheck, "answered 200") {
		t.Fatalf("the first release through the job's front door: exit %d, url_check %q\n%s", code, rec.URLCheck, stderr)
	}
	if _, body := get(t, f.url); !strings.Contains(body, "Visitor Count") {
		t.Fatalf("the front door's URL answers %q", body)
	}

	l := startURLLoad(t, f.url)
	waitFor(t, 30*time.Second, "answers through the front door", func() bool { ok, _, _ := l.snapshot(); return ok > 0 })
	rec, code, stderr = submitJSON(t, f, "-env", "prod", "-image", imageVariant(t, s, 1))
	if code != exitOK || rec.Outcome != deploy.Succeeded {
		t.Fatalf("the second release: exit %d %+v\n%s", code, rec, stderr)
	}
	before, _, _ := l.snapshot()
	waitFor(t, 30*time.Second, "100 answers more after the second release", func() bool { ok, _, _ := l.snapshot(); return ok > before+100 })
	// An instance dies at once (SIGKILL): the job's HAProxy takes it out
	// by its own check, and resends what it refuses meanwhile.
	killed, err := imagetest.Docker("ps", "-q", "--filter", "label=com.hashicorp.nomad.job_name="+f.job)
	if ids := strings.Fields(killed); err != nil || len(ids) == 0 {
		t.Fatalf("the job's containers: %q %v", killed, err)
	} else if _, err := imagetest.Docker("kill", ids[0]); err != nil {
		t.Fatal(err)
	}
	before, _, _ = l.snapshot()
	waitFor(t, 30*time.Second, "200 answers more after the kill", func() bool { ok, _, _ := l.snapshot(); return ok > before+200 })
	l.halt()
	ok, _, failed := l.snapshot()
	v, _ := rdb.Get("visitorCount")
	counted, _ := strconv.Atoi(v)
	t.Logf("load through the job's front door %s across the second release and a kill: %d answers, %d failed; Redis counted %d", f.url, ok, len(failed), counted)
	if len(failed) > 0 {
		t.Errorf("%d failed requests through the job's front door: %v", len(failed), failed)
	}
	// The page read above counted one; the deployer's and HAProxy's
	// checks call /readyz, which counts nothing. A request inside the
	// killed instance is resent by HAProxy (retry-on empty-response) and
	// may have been counted there too: the load sends one at a time, so
	// at most one more.
	if counted < ok+1 || counted > ok+2 {
		t.Errorf("Redis counted %d, the load got %d answers (and one GET / before it): want %d, or %d if the killed instance counted the request HAProxy resent", counted, ok, ok+1, ok+2)
	}

	res, err := http.Get(metrics)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	m := regexp.MustCompile(`(?m)^haproxy_frontend_http_requests_total\{proxy="app"\} (\d+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("the exporter at %s has no haproxy_frontend_http_requests_total of frontend app", metrics)
	}
	if n, _ := strconv.Atoi(string(m[1])); n < ok {
		t.Errorf("the exporter counts %d requests at frontend app, the load alone got %d answers", n, ok)
	} else {
		t.Logf("the exporter counts %d requests at frontend app", n)
	}
}

// fencedAfter returns the fenced block of lang that follows the line
// marker in file.
func fencedAfter(t *testing.T, file, marker, lang string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "\n"+marker+"\n```"+lang+"\n")
	block, _, closed := strings.Cut(after, "\n```\n")
	if !ok || !closed {
		t.Fatalf("%s: no ```%s block right after %q", file, lang, marker)
	}
	return block
}

// waitHTTP waits until url answers 200, and says what it last answered.
func waitHTTP(url string, within time.Duration) error {
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(within)
	for {
		res, err := c.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, res.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// allocsOf describes the job's allocations and their tasks' last events,
// for a failure's message.
func allocsOf(t *testing.T, nc *nomad.Client, job string) string {
	t.Helper()
	allocs, _, err := nc.Jobs().Allocations(job, true, nil)
	if err != nil {
		return err.Error()
	}
	if len(allocs) == 0 {
		return "none"
	}
	var b strings.Builder
	for _, a := range allocs {
		fmt.Fprintf(&b, "\n  %s %s", a.ID[:8], a.ClientStatus)
		for task, st := range a.TaskStates {
			for _, e := range st.Events {
				fmt.Fprintf(&b, "\n    %s: %s %s", task, e.Type, e.DisplayMessage)
			}
		}
	}
	return b.String()
}
