// Package welcome is what the counter app answers to GET /, for the code
// that calls it (the tests and the bench) and for the app itself.
package welcome

import (
	"fmt"
	"strconv"
	"strings"
)

// Prefix is what the app answers to GET /, up to the count: the whole
// answer is Prefix followed by the request's number in decimal, with no
// newline.
const Prefix = "Welcome to KODEKLOUD! Visitor Count: "

// Parse returns the count of an answer to GET /. An answer that is not
// Prefix followed by a decimal integer (a sign only for a negative one, as
// the app writes it) is an error that quotes it.
func Parse(body string) (int64, error) {
	rest, ok := strings.CutPrefix(body, Prefix)
	if !ok {
		return 0, fmt.Errorf("answer %q does not start with %q", body, Prefix)
	}
	if strings.HasPrefix(rest, "+") {
		return 0, fmt.Errorf("answer %q: the app writes no plus sign", body)
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("answer %q: the count is not a decimal integer: %w", body, err)
	}
	return n, nil
}
