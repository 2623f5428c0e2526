package localstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// standInDocker is a docker CLI that records each call and whether the
// engine stand-in (pid ENGINE) was alive at the time, lists one container,
// and, when the engine is gone, fails as the real one does.
const standInDocker = `#!/bin/sh
# A stopped stand-in stays a zombie until the test reaps it: read its state.
st=$(cut -d' ' -f3 /proc/%[1]d/stat 2>/dev/null)
if [ -n "$st" ] && [ "$st" != Z ]; then state=alive; else state=gone; fi
echo "$1 engine=$state" >>%[2]q
[ "$state" = alive ] || { echo "Cannot connect to the Docker daemon" >&2; exit 1; }
[ "$1" = ps ] && echo c0ffee
exit 0
`

// downFixture records a stack in a folder as make up leaves it: a Docker
// engine recorded by dockerd-up, an agent, and the Nomad node's ID.
type downFixture struct {
	dir, calls, docker string
	engine, agent      *exec.Cmd
}

func newDownFixture(t *testing.T) *downFixture {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	f := &downFixture{dir: t.TempDir()}
	start := func(name string) *exec.Cmd {
		cmd := exec.Command(sleep, "300")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		if err := os.WriteFile(pidFile(f.dir, name), fmt.Appendf(nil, "%d %s\n", cmd.Process.Pid, sleep), 0o644); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	f.engine, f.agent = start("dockerd"), start("consul")
	state, _ := json.Marshal(&Stack{NodeID: "node-1"})
	if err := os.WriteFile(filepath.Join(f.dir, "stack.json"), state, 0o644); err != nil {
		t.Fatal(err)
	}
	f.calls = filepath.Join(t.TempDir(), "calls")
	f.docker = filepath.Join(t.TempDir(), "docker")
	if err := os.WriteFile(f.docker, fmt.Appendf(nil, standInDocker, f.engine.Process.Pid, f.calls), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *downFixture) down(t *testing.T) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := down(context.Background(), f.dir, &out, f.docker)
	return out.String(), err
}

// exited reports whether cmd has exited, reaping it.
func exited(cmd *exec.Cmd) bool {
	var ws syscall.WaitStatus
	pid, _ := syscall.Wait4(cmd.Process.Pid, &ws, syscall.WNOHANG, nil)
	return pid == cmd.Process.Pid || cmd.ProcessState != nil
}

func TestDownRemovesContainersBeforeItStopsTheEngineAndCanRunTwice(t *testing.T) {
	t.Parallel()
	f := newDownFixture(t)
	out, err := f.down(t)
	if err != nil {
		t.Fatalf("first down: %v\n%s", err, out)
	}
	calls, _ := os.ReadFile(f.calls)
	if want := "ps engine=alive\nrm engine=alive\n"; string(calls) != want {
		t.Errorf("docker calls:\n%s\nwant the containers listed and removed while the engine ran:\n%s", calls, want)
	}
	if !exited(f.engine) || !exited(f.agent) {
		t.Errorf("down left a process running (engine exited %t, agent %t)", exited(f.engine), exited(f.agent))
	}
	out, err = f.down(t)
	if err != nil || strings.TrimSpace(out) != "no process recorded in "+f.dir+": the stack is already down" {
		t.Errorf("second down: %v, said %q; want no error and only that the stack is already down", err, out)
	}
	if again, _ := os.ReadFile(f.calls); string(again) != string(calls) {
		t.Errorf("the second down called docker again:\n%s", again)
	}
}

// After a crash or a reboot the pid files are still there, but nothing runs
// them, and the engine does not answer.
func TestDownAfterACrashSaysWhatWasGone(t *testing.T) {
	t.Parallel()
	f := newDownFixture(t)
	for _, cmd := range []*exec.Cmd{f.engine, f.agent} {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	out, err := f.down(t)
	if err != nil {
		t.Fatalf("down after a crash: %v\n%s", err, out)
	}
	for _, want := range []string{"dockerd: already gone", "consul: already gone", "the Docker engine does not answer"} {
		if !strings.Contains(out, want) {
			t.Errorf("down said:\n%s\nwant %q", out, want)
		}
	}
	if out, err := f.down(t); err != nil {
		t.Errorf("second down after a crash: %v\n%s", err, out)
	}
}

func TestCheckKindRefusesToSwitchACLsOnKeptData(t *testing.T) {
	tests := []struct {
		name          string
		data, tokens  bool // the folder holds agent data; the management tokens
		open, refused bool
	}{
		{"no data yet, open", false, false, true, false},
		{"no data yet, secure", false, false, false, false},
		{"secure data, started secure", true, true, false, false},
		{"open data, started open", true, false, true, false},
		{"secure data, started open", true, true, true, true},
		{"open data, started secure", true, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.data {
				if err := os.MkdirAll(filepath.Join(dir, "consul", "raft"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if tt.tokens {
				_, cf := TokenFiles(dir)
				if err := os.MkdirAll(filepath.Dir(cf), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(cf, []byte("x\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := CheckKind(dir, tt.open)
			if (err != nil) != tt.refused {
				t.Fatalf("CheckKind: %v, want refused %v", err, tt.refused)
			}
			if err != nil && !strings.Contains(err.Error(), "make clean") {
				t.Errorf("the refusal does not say how to go on: %v", err)
			}
		})
	}
}
