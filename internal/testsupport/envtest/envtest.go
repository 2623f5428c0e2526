// Package envtest decides what a test does when a server it needs cannot be
// started: in CI it fails, elsewhere it skips with a message saying what is
// missing and how to get it. Under go test -short (make check) a test that
// needs a server skips before starting one, CI or not.
package envtest

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// InCI reports whether the tests run in CI, where a missing server is a
// failure rather than a reason to skip.
func InCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// NeedsServers skips the test under go test -short, the fast tier that
// starts no server: what names the servers the test needs ("Nomad and
// Consul", "redis-server", "a Docker engine"). Without -short it does
// nothing, and a missing server is left to Unavailable, so CI=true alone
// never skips a test.
func NeedsServers(tb testing.TB, what string) {
	tb.Helper()
	if testing.Short() {
		tb.Skipf("needs %s: run make test", what)
	}
}

// Unavailable stops the test because something it needs is missing: Fatal in
// CI, Skip elsewhere.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if InCI() {
		tb.Fatalf("CI=true and a required server is unavailable: "+format, args...)
	}
	tb.Skipf("skipping: "+format, args...)
}

// LookPath finds a program the test needs or stops the test through
// Unavailable, naming the package that provides it.
func LookPath(tb testing.TB, name, pkg string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(tb, "%s not found on PATH (install the %s package, or run .ci/run)", name, pkg)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
