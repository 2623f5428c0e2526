package localstack

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one agent or server the stack started. Its pid is recorded in
// Dir/NAME.pid so that a later process (make down) stops exactly it.
type proc struct {
	name string
	bin  string
	args []string // as started by this process; nil for recorded ones
	log  string
	pid  int
	// exited is closed when the process has exited, for processes this Go
	// process started and still waits on; nil for recorded ones.
	exited chan struct{}
}

// start runs bin with args in a new session, output to Dir/NAME.log. With
// detach the process outlives this one (make up); otherwise this process
// reaps it.
func (s *Stack) start(name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(s.Dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// A session of its own: Ctrl-C on `make up` or a test's signal does not
	// reach the agents; Stop does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &proc{name: name, bin: bin, args: args, log: logPath, pid: cmd.Process.Pid}
	if !s.cfg.Detach {
		p.exited = make(chan struct{})
		go func() { _ = cmd.Wait(); close(p.exited) }()
	} else {
		_ = cmd.Process.Release()
	}
	if err := os.WriteFile(pidFile(s.Dir, name), []byte(fmt.Sprintf("%d %s\n", p.pid, bin)), 0o644); err != nil {
		return p, err
	}
	s.procs = append(s.procs, p)
	return p, nil
}

func pidFile(dir, name string) string { return filepath.Join(dir, name+".pid") }

// alive reports whether p is still running (a zombie counts as exited).
func (p *proc) alive() bool {
	if p.exited != nil {
		select {
		case <-p.exited:
			return false
		default:
			return true
		}
	}
	return runningAs(p.pid, p.bin)
}

// runningAs reports whether pid is a live process running bin, so a recycled
// pid is never mistaken for one of ours.
func runningAs(pid int, bin string) bool {
	st, ok := readStat(pid)
	return ok && st.state != "Z" && runs(pid, bin)
}

// runs reports whether pid's executable is bin.
func runs(pid int, bin string) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	want, err := filepath.EvalSymlinks(bin)
	if err != nil {
		want = bin
	}
	return exe == want || filepath.Base(exe) == filepath.Base(want)
}

// stop sends SIGTERM, waits up to grace, then SIGKILL; then it does the same
// to what is left of the process's group. Nomad runs a logmon and a
// docker_logger per task as its own children, in its group; they outlive it
// otherwise, one pair per task for as long as the machine runs.
func (p *proc) stop(grace time.Duration) error {
	if !terminate(func(sig syscall.Signal) { _ = syscall.Kill(p.pid, sig) }, p.alive, grace) {
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.name, p.pid)
	}
	// Only the group's processes running p.bin: the leader is gone, so this
	// must not trust its pid alone.
	left := func() []int { return groupMembers(p.pid, p.bin) }
	signalLeft := func(sig syscall.Signal) {
		for _, pid := range left() {
			_ = syscall.Kill(pid, sig)
		}
	}
	if !terminate(signalLeft, func() bool { return len(left()) > 0 }, grace) {
		return fmt.Errorf("children %v of %s (pid %d) survived SIGKILL", left(), p.name, p.pid)
	}
	return nil
}

// terminate sends SIGTERM and waits up to grace until running reports false,
// then sends SIGKILL and waits up to 5 s more. It reports whether it stopped.
func terminate(signal func(syscall.Signal), running func() bool, grace time.Duration) bool {
	if !running() {
		return true
	}
	signal(syscall.SIGTERM)
	for _, wait := range []time.Duration{grace, 5 * time.Second} {
		deadline := time.Now().Add(wait)
		for running() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if !running() {
			return true
		}
		signal(syscall.SIGKILL)
	}
	return false
}

// groupMembers returns the live processes of process group pgid that run
// bin.
func groupMembers(pgid int, bin string) []int {
	group := strconv.Itoa(pgid)
	return pids(func(pid int) bool {
		st, ok := readStat(pid)
		return pid != pgid && ok && st.pgrp == group && st.state != "Z" && runs(pid, bin)
	})
}

// pids returns the processes of this machine that keep accepts.
func pids(keep func(pid int) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var found []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && keep(pid) {
			found = append(found, pid)
		}
	}
	return found
}

// procStat holds the fields of /proc/PID/stat the stack needs.
type procStat struct{ state, ppid, pgrp, session string }

func readStat(pid int) (procStat, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	// "PID (COMM) STATE PPID PGRP ...", where COMM may hold anything.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 4 {
		return procStat{}, false
	}
	return procStat{state: f[0], ppid: f[1], pgrp: f[2], session: f[3]}, true
}

// executors finds the executors Nomad started for the raw_exec tasks of
// allocations under dir: "nomad executor {"LogFile":"DIR/.../executor.out",...}".
// Each leads a session of its own, which its task runs in, so they outlive
// the client that started them, and Stop's signals to the client's group
// never reach them. dir is matched as given and with its symbolic links
// resolved, as the stack may have been started through either.
func executors(dir string) []int {
	dirs := []string{dir}
	if real, err := filepath.EvalSymlinks(dir); err == nil && real != dir {
		dirs = append(dirs, real)
	}
	return pids(func(pid int) bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return false
		}
		args := strings.Split(string(b), "\x00")
		if len(args) < 3 || args[1] != "executor" || filepath.Base(args[0]) != "nomad" {
			return false
		}
		var conf struct{ LogFile string }
		if json.Unmarshal([]byte(args[2]), &conf) != nil {
			return false
		}
		return slices.ContainsFunc(dirs, func(d string) bool { return strings.HasPrefix(conf.LogFile, d+string(filepath.Separator)) })
	})
}

// taskProcesses returns the live processes of an executor's task: the
// executor, the processes of its session (the task and what it started),
// and its descendants, which include any that left the session (setsid).
func taskProcesses(executor int) []int {
	session := strconv.Itoa(executor)
	family := map[string]bool{}
	var found []int
	// Parents come before children often, not always: repeat until no
	// process joins.
	for grown := true; grown; {
		grown = false
		for _, pid := range pids(func(pid int) bool {
			st, ok := readStat(pid)
			return ok && st.state != "Z" && !family[strconv.Itoa(pid)] && (pid == executor || st.session == session || family[st.ppid])
		}) {
			family[strconv.Itoa(pid)] = true
			found = append(found, pid)
			grown = true
		}
	}
	return found
}

// stopExecutors stops the raw_exec tasks of the stack's Nomad clients, and
// their executors, as removeContainers does the docker tasks': a client
// that starts again finds them gone and runs its allocations again, and a
// stack that is down runs nothing. It runs once the clients are stopped,
// so none of them starts a task again meanwhile. All are signalled at
// once, so many tasks cost one grace period, not one each.
func (s *Stack) stopExecutors() error {
	dir, err := filepath.Abs(s.Dir)
	if err != nil {
		return err
	}
	execs := executors(dir)
	left := func() []int {
		var all []int
		for _, e := range execs {
			all = append(all, taskProcesses(e)...)
		}
		return all
	}
	signal := func(sig syscall.Signal) {
		for _, pid := range left() {
			_ = syscall.Kill(pid, sig)
		}
	}
	if !terminate(signal, func() bool { return len(left()) > 0 }, 15*time.Second) {
		return fmt.Errorf("the processes %v of raw_exec tasks (executors %v) survived SIGKILL", left(), execs)
	}
	return nil
}

// recorded reads the processes a detached Start recorded in dir.
func recorded(dir string) ([]*proc, error) {
	var ps []*proc
	for _, name := range startOrder {
		b, err := os.ReadFile(pidFile(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		f := strings.Fields(string(b))
		if len(f) != 2 {
			return nil, fmt.Errorf("%s: want \"PID BINARY\", got %q", pidFile(dir, name), b)
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", pidFile(dir, name), err)
		}
		ps = append(ps, &proc{name: name, bin: f[1], pid: pid, log: filepath.Join(dir, name+".log")})
	}
	return ps, nil
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
