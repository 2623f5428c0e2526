package configstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
)

func TestHashIsContentAddressed(t *testing.T) {
	a := Hash(map[string]string{"HOST": "redis", "PORT": "6379"})
	tests := []struct {
		name   string
		values map[string]string
		same   bool
	}{
		{"same content, same hash", map[string]string{"PORT": "6379", "HOST": "redis"}, true},
		{"other port, other hash", map[string]string{"HOST": "redis", "PORT": "6380"}, false},
		{"key and value boundary matters", map[string]string{"HOST": "redis\nPORT=6379"}, false},
		{"an extra key changes it", map[string]string{"HOST": "redis", "PORT": "6379", "X": ""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Hash(tt.values) == a; got != tt.same {
				t.Errorf("Hash(%v) == Hash(base) is %v, want %v", tt.values, got, tt.same)
			}
		})
	}
	if len(a) != 16 {
		t.Errorf("hash %q: want 16 hex digits", a)
	}
}

// Consul leaves out of a read the keys a token may not read, and says so
// only in a header: that is a refusal, never "no such snapshot".
func TestHiddenKeysAreARefusal(t *testing.T) {
	tests := []struct {
		name    string
		meta    *consul.QueryMeta
		err     error
		refusal bool
	}{
		{"all shown", &consul.QueryMeta{}, nil, false},
		{"some left out", &consul.QueryMeta{ResultsFilteredByACLs: true}, nil, true},
		{"no answer", nil, errors.New("connection refused"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := consulErr(hidden(tt.meta, tt.err), "counter/releases/default/x/", "read config snapshot x")
			var ce *ConsulError
			got := errors.As(err, &ce) && ce.Capability == `key:read on "counter/releases/default/x/"`
			if got != tt.refusal {
				t.Errorf("%v (capability %q); want a refusal: %v", err, ce.Capability, tt.refusal)
			}
			err = hidden(tt.meta, tt.err)
			if !tt.refusal && err != tt.err {
				t.Errorf("hidden: %v, want %v as it was", err, tt.err)
			}
		})
	}
}

// A snapshot write cut off by a lost Consul leader is asked again, and an
// attempt that was applied before its answer was lost is found by the next
// (create-only) one: the write ends with the snapshot there once. Consul is
// a fake here, answering as consul/api sees a leader lost mid-write; the
// cluster fault test restarts a real leader.
func TestPutAsksAgainWhileConsulHasNoLeader(t *testing.T) {
	tests := []struct {
		name     string
		failures int  // 500s before it answers
		applied  bool // the first failed attempt was applied all the same
		created  bool
		err      bool
	}{
		{"answers at once", 0, false, true, false},
		{"answers after two 500s", 2, false, true, false},
		{"applied, answer lost", 1, true, false, false},
		{"never answers", 1000, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			calls, stored := 0, map[string]string{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case r.URL.Path == "/v1/txn":
					var ops []struct{ KV struct{ Key, Value string } }
					_ = json.NewDecoder(r.Body).Decode(&ops)
					calls++
					if calls <= tt.failures {
						if calls == 1 && tt.applied {
							for _, op := range ops {
								v, _ := base64.StdEncoding.DecodeString(op.KV.Value)
								stored[op.KV.Key] = string(v)
							}
						}
						http.Error(w, "rpc error making call: EOF", http.StatusInternalServerError)
						return
					}
					if len(stored) > 0 {
						w.WriteHeader(http.StatusConflict)
						fmt.Fprint(w, `{"Results":null,"Errors":[{"OpIndex":0,"What":"failed to set key: index is stale"}]}`)
						return
					}
					for _, op := range ops {
						v, _ := base64.StdEncoding.DecodeString(op.KV.Value)
						stored[op.KV.Key] = string(v)
					}
					fmt.Fprint(w, `{"Results":[],"Errors":null}`)
				case strings.HasPrefix(r.URL.Path, "/v1/kv/"):
					var out []map[string]any
					for k, v := range stored {
						out = append(out, map[string]any{"Key": k, "Value": base64.StdEncoding.EncodeToString([]byte(v))})
					}
					if len(out) == 0 {
						http.NotFound(w, r)
						return
					}
					_ = json.NewEncoder(w).Encode(out)
				default:
					http.NotFound(w, r)
				}
			}))
			defer srv.Close()
			c, err := consul.NewClient(&consul.Config{Address: strings.TrimPrefix(srv.URL, "http://")})
			if err != nil {
				t.Fatal(err)
			}
			var progress bytes.Buffer
			s := New(c, "")
			s.Progress, s.Patience = &progress, 2*time.Second
			created, err := s.Put(context.Background(), "counter/releases/default/x/abc", map[string]string{"HOST": "redis", "PORT": "6379"})
			if (err != nil) != tt.err || created != tt.created {
				t.Fatalf("Put: created %v, %v; want created %v, error %v", created, err, tt.created, tt.err)
			}
			if waited := strings.Contains(progress.String(), "does not answer"); waited != (tt.failures > 0) {
				t.Errorf("progress %q: said it waits %v, want %v", progress.String(), waited, tt.failures > 0)
			}
		})
	}
}

func TestTransient(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{errors.New("Failed request: rpc error making call: EOF"), true},
		{consul.StatusError{Code: 500, Body: "No cluster leader"}, true},
		{consul.StatusError{Code: 403, Body: "Permission denied"}, false},
		{errors.New("Failed request: Permission denied: token lacks permission 'key:write'"), false},
		{fmt.Errorf("Put: %w", io.EOF), true},
		{errors.New("config snapshot x already exists with other content"), false},
	}
	for _, tt := range tests {
		if got := transient(tt.err); got != tt.want {
			t.Errorf("transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
