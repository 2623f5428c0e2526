package localstack_test

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/access"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/imagetest"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// checkedJob is kvJob with a Consul service whose check PINGs Redis through
// the app (/readyz), as the counter job's does, and a meta value that makes
// each registration a version of its own.
const checkedJob = `
variable "image" { type = string }
variable "prefix" { type = string }
variable "v" { type = string }

job "%s" {
  type = "service"
  meta = { v = var.v }

  group "web" {
    network {
      port "http" {}
    }

    service {
      name     = "%[1]s"
      port     = "http"
      provider = "consul"

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "1s"
        timeout  = "1s"
      }
    }

    task "app" {
      driver = "docker"
      consul {}

      config {
        image        = var.image
        network_mode = "host"
      }

      template {
        data        = <<EOT
HOST={{ key "${var.prefix}/HOST" }}
PORT={{ key "${var.prefix}/PORT" }}
EOT
        destination = "local/redis.env"
        env         = true
      }

      env {
        LISTEN_ADDR = "${NOMAD_ADDR_http}"
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
`

// TestDownKeepsJobHistoryAndUpRunsItAgain is make down then make up: Down
// stops the stack and leaves no container of it, but it is "stop", not
// "delete": the job keeps its versions in Nomad's data, and Start on the
// same folder brings the job's allocation back, running and passing its
// check.
func TestDownKeepsJobHistoryAndUpRunsItAgain(t *testing.T) {
	t.Parallel()
	tag := "counter:" + stacktest.Name(t, "downup")
	imagetest.Build(t, tag)
	t.Cleanup(func() { _, _ = imagetest.Docker("rmi", tag) })

	cfg := ownConfig(t)
	cfg.Detach = true
	dir := cfg.Dir
	ctx := context.Background()
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = localstack.Down(context.Background(), dir, io.Discard) })

	// The app counts in the stack's own Redis, which stops and starts with
	// it, as dev's does.
	name := stacktest.Name(t, "downup")
	cc, _ := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.ConsulToken})
	if err := access.GrantJobConfig(ctx, cc, "default", name, name); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"HOST": "127.0.0.1", "PORT": strconv.Itoa(s.Ports.Redis)} {
		if _, err := cc.KV().Put(&consul.KVPair{Key: name + "/" + k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	nc, _ := nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: s.NomadToken})
	for _, v := range []string{"first", "second"} {
		job, err := nc.Jobs().ParseHCLOpts(&nomad.JobsParseRequest{
			JobHCL:       fmt.Sprintf(checkedJob, name),
			Variables:    fmt.Sprintf("image = %q\nprefix = %q\nv = %q\n", tag, name, v),
			Canonicalize: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := nc.Jobs().Register(job, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitPassing(t, cc, name)
	before := jobVersions(t, nc, name)
	if len(before) != 2 {
		t.Fatalf("job %s has versions %v before Down, want 2", name, before)
	}
	allocs, _, _ := nc.Jobs().Allocations(name, true, nil)

	start := time.Now()
	if err := localstack.Down(ctx, dir, io.Discard); err != nil {
		t.Fatalf("Down: %v", err)
	}
	t.Logf("Down took %s", time.Since(start).Round(100*time.Millisecond))
	for _, a := range allocs {
		if out, _ := imagetest.Docker("ps", "-aq", "--filter", "label=com.hashicorp.nomad.alloc_id="+a.ID); out != "" {
			t.Errorf("container %s of allocation %s survived Down", out, a.ID)
		}
	}
	if out, _ := imagetest.Docker("ps", "-aq", "--filter", "label=com.hashicorp.nomad.node_id="+s.NodeID); out != "" {
		t.Errorf("containers %s of node %s survived Down", out, s.NodeID)
	}

	// make up: the same folder, the same ports.
	again := cfg
	again.Ports, again.Resume = s.Ports, true
	start = time.Now()
	if s, err = localstack.Start(ctx, again); err != nil {
		t.Fatalf("Start after Down: %v", err)
	}
	t.Logf("Start after Down took %s", time.Since(start).Round(100*time.Millisecond))
	nc, _ = nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: s.NomadToken})
	cc, _ = consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.ConsulToken})
	after := jobVersions(t, nc, name)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("job %s has versions %v after Down and Start, want %v as before", name, after, before)
	}
	// What make up waits for before it calls dev.
	if err := s.WaitWorkloads(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("the allocation ran and passed its check %s after Start began", time.Since(start).Round(100*time.Millisecond))
	waitForAddress(t, nc, name, "http")
	waitPassing(t, cc, name)
}

// jobVersions are a job's versions, newest first, each as "N:meta v".
func jobVersions(t *testing.T, nc *nomad.Client, job string) []string {
	t.Helper()
	versions, _, _, err := nc.Jobs().Versions(job, false, nil)
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	var out []string
	for _, v := range versions {
		out = append(out, fmt.Sprintf("%d:%s", *v.Version, v.Meta["v"]))
	}
	return out
}

// waitPassing waits up to 2 minutes until service has an instance in
// Consul whose checks all pass.
func waitPassing(t *testing.T, cc *consul.Client, service string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		entries, _, err := cc.Health().Service(service, "", false, nil)
		if err != nil {
			last = err.Error()
			continue
		}
		last = fmt.Sprintf("%d instance(s)", len(entries))
		for _, e := range entries {
			if st := e.Checks.AggregatedStatus(); st == consul.HealthPassing {
				return
			} else {
				last += ", one " + st
			}
		}
	}
	t.Fatalf("service %s has no passing instance after 2m: %s", service, last)
}
