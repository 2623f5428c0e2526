package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A bad -nomad or -consul is found before anything of the running stack is
// stopped.
func TestUpChecksTheBinariesBeforeStoppingTheOldStack(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	notExecutable := filepath.Join(t.TempDir(), "nomad")
	if err := os.WriteFile(notExecutable, []byte("not a program"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		nomad, consul string
		want          string
	}{
		{"rejects/a missing nomad", "/nonexistent/nomad", sleep, "-nomad /nonexistent/nomad: not an executable program"},
		{"rejects/a nomad that is not executable", notExecutable, sleep, "-nomad " + notExecutable + ": not an executable program"},
		{"rejects/a missing consul", sleep, "/nonexistent/consul", "-consul /nonexistent/consul: not an executable program"},
		{"rejects/none given", "", "", "-nomad and -consul (or NOMAD_BIN and CONSUL_BIN) are required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			// A recorded agent of the running (unhealthy: no stack.json)
			// stack, which up would stop before starting a new one.
			agent := exec.Command(sleep, "300")
			if err := agent.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
			if err := os.WriteFile(filepath.Join(dir, "consul.pid"), fmt.Appendf(nil, "%d %s\n", agent.Process.Pid, sleep), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"stack", "up", "-dir", dir, "-nomad", tt.nomad, "-consul", tt.consul},
				func(string) string { return "" }, &stdout, &stderr)
			var u usageError
			if !errors.As(err, &u) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("up: %v, want a usage error with %q", err, tt.want)
			}
			var ws syscall.WaitStatus
			if pid, _ := syscall.Wait4(agent.Process.Pid, &ws, syscall.WNOHANG, nil); pid != 0 {
				t.Error("up stopped the running stack's agent before it found the bad binary")
			}
		})
	}
}
