package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/testsupport/imagetest"
	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

// TestImageServesCountFromRedis builds the real Dockerfile and runs the image
// on the real Docker engine against a real Redis.
func TestImageServesCountFromRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Docker image; not in -short")
	}
	tag := fmt.Sprintf("counter:test-%d", time.Now().UnixNano())
	imagetest.Build(t, tag)
	t.Cleanup(func() { _, _ = imagetest.Docker("rmi", "-f", tag) })

	size, err := imagetest.Docker("image", "inspect", "-f", "{{.Size}}", tag)
	if err != nil {
		t.Fatal(err)
	}
	bytes, _ := strconv.ParseInt(size, 10, 64)
	t.Logf("image size: %.1f MB", float64(bytes)/1e6)
	if bytes <= 0 || bytes >= 15e6 {
		t.Errorf("image size %d bytes, want under 15 MB", bytes)
	}
	if user, _ := imagetest.Docker("image", "inspect", "-f", "{{.Config.User}}", tag); user == "" || user == "0" || user == "root" {
		t.Errorf("image runs as %q, want a non-root user", user)
	}

	rdb := redistest.Start(t)
	if err := rdb.Set(counterKey, "41"); err != nil {
		t.Fatal(err)
	}
	// 64 MiB, as the job gives the task (jobs/counter.nomad.hcl).
	cid, err := imagetest.Docker("run", "-d", "--network", "host", "--memory=64m", "--memory-swap=64m",
		"-e", "HOST="+rdb.Host, "-e", "PORT="+strconv.Itoa(rdb.Port), "-e", "LISTEN_ADDR=127.0.0.1:0", tag)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := imagetest.Docker("logs", cid)
			t.Logf("container logs:\n%s", logs)
		}
		_, _ = imagetest.Docker("rm", "-f", cid)
	})

	deadline := time.Now().Add(20 * time.Second)
	listen := ""
	for {
		if listen == "" {
			// The app logs on stderr, which docker logs passes on as its own.
			logs, _ := exec.Command("docker", "logs", cid).CombinedOutput()
			listen, _ = listeningAddr(string(logs))
		}
		var resp *http.Response
		err := fmt.Errorf("no \"listening\" line in the container's log yet")
		if listen != "" {
			resp, err = http.Get("http://" + listen + "/")
		}
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got, want := string(body), "Welcome to KODEKLOUD! Visitor Count: 42"; resp.StatusCode != 200 || got != want {
				t.Fatalf("container answered %d %q, want 200 %q", resp.StatusCode, got, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container did not answer on %q within 20s: %v", listen, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Run("survives 1,000 hostile clients in 64 MiB while a normal one is answered", func(t *testing.T) {
		hostileClients(t, "http://"+listen, 1000)
		if state, _ := imagetest.Docker("inspect", "-f", "{{.State.Running}} {{.State.OOMKilled}}", cid); state != "true false" {
			t.Errorf("container running, OOM-killed: %s; want true false", state)
		}
		full, _ := imagetest.Docker("inspect", "-f", "{{.Id}}", cid)
		if b, err := os.ReadFile("/sys/fs/cgroup/memory/docker/" + full + "/memory.max_usage_in_bytes"); err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			t.Logf("the container's peak memory: %.1f MiB of 64", float64(n)/(1<<20))
		}
	})

	// SIGTERM (docker stop) must end the app cleanly with exit code 0.
	if _, err := imagetest.Docker("stop", "-t", "10", cid); err != nil {
		t.Fatal(err)
	}
	if code, _ := imagetest.Docker("inspect", "-f", "{{.State.ExitCode}}", cid); code != "0" {
		t.Errorf("container exit code after docker stop = %s, want 0", code)
	}
}
