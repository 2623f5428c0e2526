package envtest

import (
	"flag"
	"strconv"
	"testing"
)

// TestNeedsServers checks that NeedsServers skips under -short and nowhere
// else, CI=true or not. It sets -test.short for each case and puts it back.
func TestNeedsServers(t *testing.T) {
	was := flag.Lookup("test.short").Value.String()
	t.Cleanup(func() { _ = flag.Set("test.short", was) })
	tests := []struct {
		name  string
		short bool
		ci    string
		skips bool
	}{
		{"skips/under -short", true, "", true},
		{"skips/under -short with CI=true", true, "true", true},
		{"runs/without -short", false, "", false},
		{"runs/without -short with CI=true", false, "true", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			if err := flag.Set("test.short", strconv.FormatBool(tt.short)); err != nil {
				t.Fatal(err)
			}
			var inner *testing.T
			went := false
			t.Run("test", func(t *testing.T) {
				inner = t
				NeedsServers(t, "a server")
				went = true
			})
			if inner.Skipped() != tt.skips || went == tt.skips {
				t.Errorf("short %v, CI=%q: skipped %v, went on %v; want skipped %v", tt.short, tt.ci, inner.Skipped(), went, tt.skips)
			}
		})
	}
}
