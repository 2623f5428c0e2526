package imageref

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name, ref string
		want      Ref
		err       string
	}{
		{"accepts/local registry with tag", "127.0.0.1:5000/counter:3f2a1b", Ref{Registry: "127.0.0.1:5000", Repo: "counter", Tag: "3f2a1b"}, ""},
		{"accepts/hub name with tag", "counter:v1.2", Ref{Repo: "counter", Tag: "v1.2"}, ""},
		{"accepts/nested repo", "registry.example.com/team/counter:abc", Ref{Registry: "registry.example.com", Repo: "team/counter", Tag: "abc"}, ""},
		{"accepts/digest only", "127.0.0.1:5000/counter@" + d, Ref{Registry: "127.0.0.1:5000", Repo: "counter", Digest: d}, ""},
		{"accepts/latest with digest", "counter:latest@" + d, Ref{Repo: "counter", Tag: "latest", Digest: d}, ""},
		{"rejects/mutable tag latest", "127.0.0.1:5000/counter:latest", Ref{}, `mutable tag "latest"`},
		{"rejects/no tag", "127.0.0.1:5000/counter", Ref{}, "has no tag"},
		{"rejects/registry port without tag", "localhost:5000/counter", Ref{}, "has no tag"},
		{"rejects/bad digest", "counter@sha256:abc", Ref{}, "is not sha256"},
		{"rejects/upper-case repo", "Counter:v1", Ref{}, "not a valid repository"},
		{"rejects/empty", "", Ref{}, "not a valid repository"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.ref)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse(%q) = %v, want error containing %q", tt.ref, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tt.ref, got, err, tt.want)
			}
			if got.String() != tt.ref {
				t.Errorf("String() = %q, want %q", got.String(), tt.ref)
			}
		})
	}
}
