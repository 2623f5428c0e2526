package main

import (
	"strings"
	"testing"

	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

// Each in-process run creates its clients; without closing their idle
// connections, Nomad refuses every call after the 100th connection from this
// address.
func TestManyRunsInOneProcessStayUnderNomadsConnectionLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// History reads Nomad only; nothing dials this address.
	f.writeEnv("dev", &redistest.Server{Host: "127.0.0.1", Port: 6379}, 1, "")
	_, want, wantCode := f.deployer("history", "-env", "dev")
	if wantCode != 1 || !strings.Contains(want, "has no releases") {
		t.Fatalf("history of a job never submitted: exit %d, %s; want exit 1 and Nomad's answer", wantCode, want)
	}
	for i := range 150 {
		if _, stderr, code := f.deployer("history", "-env", "dev"); code != wantCode || stderr != want {
			t.Fatalf("run %d: exit %d, %s; want the first run's exit %d, %s", i+2, code, stderr, wantCode, want)
		}
	}
}
