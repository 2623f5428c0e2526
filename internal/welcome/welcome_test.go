package welcome

import (
	"math"
	"strconv"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		body string
		want int64
		err  bool
	}{
		{"reads/the first count", Prefix + "1", 1, false},
		{"reads/a count of many digits", Prefix + "1234567890", 1234567890, false},
		{"reads/zero", Prefix + "0", 0, false},
		{"reads/a negative count", Prefix + "-4", -4, false},
		{"reads/the largest count", Prefix + strconv.FormatInt(math.MaxInt64, 10), math.MaxInt64, false},
		{"rejects/an empty answer", "", 0, true},
		{"rejects/the prefix alone", Prefix, 0, true},
		{"rejects/another text", "Service Unavailable: the visitor counter cannot reach Redis\n", 0, true},
		{"rejects/the prefix in another case", "welcome to kodekloud! visitor count: 1", 0, true},
		{"rejects/a trailing newline", Prefix + "1\n", 0, true},
		{"rejects/a space before the count", Prefix + " 1", 0, true},
		{"rejects/a plus sign", Prefix + "+1", 0, true},
		{"rejects/a count past int64", Prefix + "9223372036854775808", 0, true},
		{"rejects/a count with a letter", Prefix + "12a", 0, true},
		{"rejects/two answers run together", Prefix + "1" + Prefix + "2", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.body)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("Parse(%q) = %d, %v; want %d, error %v", tt.body, got, err, tt.want, tt.err)
			}
		})
	}
}
