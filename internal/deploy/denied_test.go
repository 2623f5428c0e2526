package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/configstore"
)

// Consul's refusals name the permission; the line the user reads names it,
// what the deployer was doing, the variable the token came from and the
// policy file to change.
func TestDeniedNamesTheOperationAndThePermission(t *testing.T) {
	// Consul's answers, as the real servers give them through consul/api.
	lacks := func(perm, on string) error {
		return fmt.Errorf("Unexpected response code: 403 (Permission denied: token with AccessorID '4a1c' lacks permission '%s' on %q)", perm, on)
	}
	tests := []struct {
		name string
		err  error
		want []string // all in the line
		not  bool     // not a refusal: err comes back as it is
	}{
		{"snapshot write", fmt.Errorf("submit: %w", &configstore.ConsulError{Doing: "write config snapshot counter/releases/default/x/abc", Err: lacks("key:write", "counter/releases/default/x/abc/HOST")}),
			[]string{`Consul denied key:write on "counter/releases/default/x/abc/HOST" to this token (CONSUL_HTTP_TOKEN)`,
				"while the deployer tried to write config snapshot counter/releases/default/x/abc:", "deployer/policies/consul.hcl"}, false},
		{"lock session", &configstore.ConsulError{Doing: "take the deploy lock counter/releases/.locks/default/x", Err: fmt.Errorf("failed to create session: %w", lacks("session:write", "node-1"))},
			[]string{`Consul denied session:write on "node-1"`, "tried to take the deploy lock counter/releases/.locks/default/x:"}, false},
		{"unknown token", &configstore.ConsulError{Doing: "read config snapshot a/b", Err: errors.New("Unexpected response code: 403 (ACL not found)")},
			[]string{"Consul does not know this token (CONSUL_HTTP_TOKEN) while the deployer tried to read config snapshot a/b"}, false},
		{"unknown token, no operation known", errors.New("Unexpected response code: 403 (ACL not found)"),
			[]string{"while the deployer tried to reach Consul"}, false},
		{"another error", &configstore.ConsulError{Doing: "read config snapshot a/b", Err: errors.New("connection refused")}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Denied(tt.err)
			var d *DeniedError
			if tt.not {
				if errors.As(got, &d) || got != tt.err {
					t.Fatalf("Denied(%v) = %v, want it unchanged", tt.err, got)
				}
				return
			}
			if !errors.As(got, &d) {
				t.Fatalf("Denied(%v) = %v, not a DeniedError", tt.err, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got.Error(), w) {
					t.Errorf("%q\nlacks %q", got, w)
				}
			}
		})
	}
}

// filteredHealth answers as Consul does to a token that may not read a
// service or its nodes: no error, the instances left out, and the header
// that says so.
type filteredHealth struct{ filtered bool }

func (h filteredHealth) Service(service, tag string, passingOnly bool, q *consul.QueryOptions) ([]*consul.ServiceEntry, *consul.QueryMeta, error) {
	return nil, &consul.QueryMeta{ResultsFilteredByACLs: h.filtered}, nil
}

func TestInstancesHiddenByACLsAreARefusal(t *testing.T) {
	for _, filtered := range []bool{false, true} {
		t.Run(fmt.Sprint("filtered=", filtered), func(t *testing.T) {
			var progress bytes.Buffer
			d := &Deployer{Instances: filteredHealth{filtered}, Progress: &progress}
			err := d.seesInstances(context.Background(), "counter-dev")
			var denied *DeniedError
			if filtered != errors.As(err, &denied) {
				t.Fatalf("seesInstances: %v; want a DeniedError only when Consul filtered the answer", err)
			}
			if urls := d.urls(context.Background(), "counter-dev", "abc"); len(urls) != 0 {
				t.Errorf("urls = %v", urls)
			}
			warned := strings.Contains(progress.String(), `warning: Consul denied service:read on "counter-dev" or node:read on one of its nodes`)
			if warned != filtered {
				t.Errorf("progress %q: warned %v, want %v", progress.String(), warned, filtered)
			}
		})
	}
}
