package configstore

import "testing"

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
