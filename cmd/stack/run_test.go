package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/kodekloud/counter/internal/localstack"
)

// A bad -nomad, -consul or -prometheus is found before anything of the running stack is
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
		name                string
		nomad, consul, prom string
		want                string
	}{
		{"rejects/a missing nomad", "/nonexistent/nomad", sleep, sleep, "-nomad /nonexistent/nomad: not an executable program"},
		{"rejects/a nomad that is not executable", notExecutable, sleep, sleep, "-nomad " + notExecutable + ": not an executable program"},
		{"rejects/a missing consul", sleep, "/nonexistent/consul", sleep, "-consul /nonexistent/consul: not an executable program"},
		{"rejects/a missing prometheus", sleep, sleep, "/nonexistent/prometheus", "-prometheus /nonexistent/prometheus: not an executable program"},
		{"rejects/none given", "", "", "", "-nomad, -consul and -prometheus (or NOMAD_BIN, CONSUL_BIN and PROMETHEUS_BIN) are required"},
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
			err := run(context.Background(), []string{"stack", "up", "-dir", dir, "-nomad", tt.nomad, "-consul", tt.consul, "-prometheus", tt.prom},
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

// TestHelpListsEveryFlagWithItsUsage: stack -h shows each flag that run
// parses, with usage text of its own.
func TestHelpListsEveryFlagWithItsUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"stack", "-h"}, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatalf("stack -h: %v", err)
	}
	help := stdout.String()
	fs, _ := flagSet("up", func(string) string { return "" }, &stderr)
	fs.VisitAll(func(f *flag.Flag) {
		_, text := flag.UnquoteUsage(f)
		if len(strings.Fields(text)) < 2 {
			t.Errorf("-%s has usage %q; want a sentence", f.Name, f.Usage)
			return
		}
		// The flag at the start of a line, its text's first words after it.
		first := strings.Join(strings.Fields(text)[:2], " ")
		if !regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(f.Name) + `\b[^\n]*\n?\s*` + regexp.QuoteMeta(first)).MatchString(help) {
			t.Errorf("stack -h does not list -%s with %q:\n%s", f.Name, first, help)
		}
	})
}

// A mistake on the command line exits 2, as stack's help says; -h does not
// count as one.
func TestCommandLineMistakesExitTwo(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no command", []string{"stack"}, 2},
		{"an unknown flag", []string{"stack", "up", "-bogus"}, 2},
		{"a flag without its value", []string{"stack", "down", "-dir"}, 2},
		{"an extra argument", []string{"stack", "down", "-dir", "x", "extra"}, 2},
		{"help", []string{"stack", "-h"}, 0},
		{"help of a command", []string{"stack", "up", "-h"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, func(string) string { return "" }, &stdout, &stderr)
			if got := exitCode(err, &stderr); got != tt.want {
				t.Errorf("%q: exit %d (%v), want %d", tt.args, got, err, tt.want)
			}
		})
	}
}

// TestPrometheusAddressIsPrintedAndExported: make up prints a stack's
// Prometheus, and bin/stack env hands it out as PROMETHEUS_ADDR, which
// the deployer reads; a stack without one names none.
func TestPrometheusAddressIsPrintedAndExported(t *testing.T) {
	tests := []struct {
		name       string
		prometheus string
		want       []string
	}{
		{"names/a stack's Prometheus", "http://127.0.0.1:9090",
			[]string{"Prometheus:  http://127.0.0.1:9090/", "export PROMETHEUS_ADDR=http://127.0.0.1:9090\n"}},
		{"names/none without one", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &localstack.Stack{Dir: ".stack", NomadAddr: "http://127.0.0.1:4646", ConsulAddr: "127.0.0.1:8500", PrometheusAddr: tt.prometheus}
			var addrs, env bytes.Buffer
			printAddrs(&addrs, s)
			printEnv(&env, s)
			out := addrs.String() + env.String()
			for _, want := range tt.want {
				if !strings.Contains(out, want) {
					t.Errorf("make up and bin/stack env print no %q:\n%s", want, out)
				}
			}
			if tt.want == nil && (strings.Contains(out, "PROMETHEUS_ADDR") || strings.Contains(out, "Prometheus:  ")) {
				t.Errorf("a stack without Prometheus names one:\n%s", out)
			}
		})
	}
}
