package helptext

import (
	"strings"
	"testing"
)

func TestWrap(t *testing.T) {
	long := strings.Repeat("x", 70)
	tests := []struct {
		name       string
		col        int
		head, text string
		want       string
	}{
		{"puts/a short head and text on one line", 8, "  0", "ok",
			"  0     ok\n"},
		{"puts/the text two columns after the widest head that fits", 8, "  -abc", "ok",
			"  -abc  ok\n"},
		{"moves/the text to the next line when the head leaves one space", 8, "  -abcd", "ok",
			"  -abcd\n        ok\n"},
		{"moves/the text to the next line when the head is wider", 8, "  -abcdefgh", "ok",
			"  -abcdefgh\n        ok\n"},
		{"wraps/at 80 columns, each line in the column",
			17, "  -dir DIR", strings.Repeat("word ", 20),
			"  -dir DIR       word word word word word word word word word word word word\n" +
				"                 word word word word word word word word\n"},
		{"fills/a line to exactly 80 columns", 10, "  -a", strings.Repeat("y", 70) + " z",
			"  -a      " + strings.Repeat("y", 70) + "\n          z\n"},
		{"keeps/a word longer than the column whole, on a line of its own", 17, "  -x", "a " + long + " b",
			"  -x             a\n                 " + long + "\n                 b\n"},
		{"collapses/runs of spaces and newlines in the text", 8, "  1", "failed,\n\n  see   stderr",
			"  1     failed, see stderr\n"},
		{"writes/the head alone for no text", 8, "  2", "",
			"  2     \n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			Wrap(&b, tt.col, tt.head, tt.text)
			if got := b.String(); got != tt.want {
				t.Errorf("Wrap(%d, %q, %q):\n got %q\nwant %q", tt.col, tt.head, tt.text, got, tt.want)
			}
		})
	}
}
