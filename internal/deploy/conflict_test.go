package deploy

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

// TestIsConflict replays answers a real Nomad v1.11.2 agent gave (recorded
// with its HTTP API) through the real API client, so the errors are the ones
// the deployer sees.
func TestIsConflict(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		revert bool // the answer to a revert, not a register
		want   bool
	}{
		{"conflict/register against a stale modify index", 500,
			"Enforcing job modify index 1: job exists with conflicting job modify index: 8", false, true},
		{"conflict/register a new job that now exists", 500,
			"Enforcing job modify index 0: job already exists", false, true},
		// The job was purged after it was read at index 12 (or -check-index
		// 12 named a job that is gone): the mirror of "job already exists".
		// Nomad words it with the same prefix as every failed index check
		// (job_endpoint.go, Nomad 1.11.2), and nomad job run -check-index
		// takes it for one. It is a conflict: the job changed since it was
		// read, and nothing was registered; a new plan shows what now is (a
		// new job), so exit 5 and "look again and retry" is the right answer,
		// not exit 1 as for a server fault.
		{"conflict/register against a job deleted since it was read", 500,
			"Enforcing job modify index 12: job does not exist", false, true},
		{"conflict/revert when the current version moved", 500,
			"Current job has version 1; enforcing version 5", true, true},
		{"not a conflict/revert to a version Nomad dropped", 500,
			`job "cj" in namespace "default" at version 7 not found`, true, false},
		{"not a conflict/revert of an unknown job", 500, `job "nosuch" not found`, true, false},
		{"not a conflict/permission denied", 403, "Permission denied", false, false},
		{"not a conflict/the text in another status", 400,
			"Enforcing job modify index 1: job exists with conflicting job modify index: 8", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			defer srv.Close()
			c, err := nomad.NewClient(&nomad.Config{Address: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tt.revert {
				prior := uint64(5)
				_, _, err = c.Jobs().Revert("cj", 0, &prior, nil, "", "")
			} else {
				_, _, err = c.Jobs().RegisterOpts(&nomad.Job{ID: ptr("cj")}, &nomad.RegisterOptions{EnforceIndex: true, ModifyIndex: 1}, nil)
			}
			if err == nil {
				t.Fatal("the client took the answer for a success")
			}
			if got := isConflict(err); got != tt.want {
				t.Errorf("isConflict(%v) = %t, want %t", err, got, tt.want)
			}
			if got := isConflict(fmt.Errorf("register job: %w", err)); got != tt.want {
				t.Errorf("isConflict of the wrapped error = %t, want %t", got, tt.want)
			}
		})
	}
	for _, err := range []error{nil, errors.New("Enforcing job modify index 1"), fmt.Errorf("dial tcp 127.0.0.1:1: connection refused")} {
		if isConflict(err) {
			t.Errorf("isConflict(%v) = true for an error Nomad did not answer", err)
		}
	}
}

func ptr[T any](v T) *T { return &v }
