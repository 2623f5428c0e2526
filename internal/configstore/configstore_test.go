package configstore

import (
	"errors"
	"testing"

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
