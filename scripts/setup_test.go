// Package scripts holds the tests of the project's shell scripts.
package scripts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// commands are the programs scripts/setup looks for on PATH, and their
// packages; the others it proves by a file.
var commands = map[string]string{
	"dockerd": "docker.io", "redis-server": "redis-server", "redis-benchmark": "redis-tools",
	"docker-registry": "docker-registry", "busybox": "busybox-static", "chromium": "chromium",
	"haproxy": "haproxy", "wrk": "wrk", "curl": "curl", "git": "git", "make": "make",
}

// files are the packages setup proves by an absolute path; on this machine
// they may or may not be there, and the test expects what is.
var files = map[string]string{"/usr/bin/time": "time", "/etc/ssl/certs/ca-certificates.crt": "ca-certificates"}

// standIn is an apt-get that records its arguments and, on install, puts
// every program of STUB_PROVIDES on PATH (or fails when STUB_FAIL is set).
const standIn = `#!/bin/sh
echo "$*" >>"$RECORD"
[ -z "$STUB_FAIL" ] || { echo "E: Unable to locate package $STUB_FAIL"; exit 100; }
if [ "$1" = install ]; then
  for c in $STUB_PROVIDES; do printf '#!/bin/sh\n' >"$BIN/$c"; chmod +x "$BIN/$c"; done
fi
`

type run struct {
	code   int
	stderr string
	calls  []string // the installer's argument lists
}

// setup runs scripts/setup with PATH holding only what the script itself
// needs, the programs in have, and a stand-in apt-get.
func setup(t *testing.T, have []string, env ...string) run {
	t.Helper()
	bin := t.TempDir()
	for _, tool := range []string{"bash", "sh", "env", "id", "mktemp", "tail", "rm", "cat", "chmod", "printf"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range have {
		if err := os.WriteFile(filepath.Join(bin, c), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	apt := filepath.Join(t.TempDir(), "apt-get")
	if err := os.WriteFile(apt, []byte(standIn), 0o755); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(t.TempDir(), "calls")
	cmd := exec.Command("bash", "setup")
	cmd.Env = append([]string{"PATH=" + bin, "BIN=" + bin, "RECORD=" + record, "SETUP_APT_GET=" + apt, "TMPDIR=" + t.TempDir()}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	r := run{stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(record); err == nil {
		r.calls = strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	return r
}

// missingFiles are the packages setup will ask for on this machine because
// their file is not there.
func missingFiles() []string {
	var pkgs []string
	for f, pkg := range files {
		if _, err := os.Stat(f); err != nil {
			pkgs = append(pkgs, pkg)
		}
	}
	return pkgs
}

func TestSetupInstallsExactlyWhatIsMissing(t *testing.T) {
	all := make([]string, 0, len(commands))
	for c := range commands {
		all = append(all, c)
	}
	tests := []struct {
		name string
		have []string
	}{
		{"installs/everything on a bare machine", nil},
		{"installs/only the browser and the registry", without(all, "chromium", "docker-registry")},
		{"installs/only the Docker engine", without(all, "dockerd")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want, provides []string
			for c, pkg := range commands {
				if !slices.Contains(tt.have, c) {
					want = append(want, pkg)
					provides = append(provides, c)
				}
			}
			want = append(want, missingFiles()...)
			r := setup(t, tt.have, "SETUP_UID=0", "STUB_PROVIDES="+strings.Join(provides, " "))
			if r.code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			if len(r.calls) != 2 || r.calls[0] != "update -qq" || !strings.HasPrefix(r.calls[1], "install -y -qq --no-install-recommends ") {
				t.Fatalf("installer calls %q, want update, then install", r.calls)
			}
			got := strings.Fields(strings.TrimPrefix(r.calls[1], "install -y -qq --no-install-recommends "))
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("installed %v, want exactly the missing %v", got, want)
			}
			if !strings.Contains(r.stderr, "setup: installing ") || !strings.Contains(r.stderr, "setup: installed in ") {
				t.Errorf("stderr does not say what it installs:\n%s", r.stderr)
			}
		})
	}
}

func TestSetupIsSilentWhenNothingIsMissing(t *testing.T) {
	if len(missingFiles()) > 0 {
		t.Skipf("this machine lacks %v, so setup has something to do (run scripts/setup)", missingFiles())
	}
	var all []string
	for c := range commands {
		all = append(all, c)
	}
	r := setup(t, all, "SETUP_UID=0")
	if r.code != 0 || r.stderr != "" || len(r.calls) != 0 {
		t.Errorf("exit %d, stderr %q, installer calls %q; want 0, silence and no call", r.code, r.stderr, r.calls)
	}
}

func TestSetupWithoutRootOrSudoSaysTheCommandToRun(t *testing.T) {
	r := setup(t, without(keys(commands), "wrk", "chromium"), "SETUP_UID=1000")
	want := "sudo apt-get install -y --no-install-recommends chromium wrk"
	if r.code != 1 || !strings.Contains(r.stderr, want) || len(r.calls) != 0 {
		t.Errorf("exit %d, installer calls %q, stderr:\n%s\nwant exit 1, no call, and %q", r.code, r.calls, r.stderr, want)
	}
}

func TestSetupFailsWhenTheInstallerDoes(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"the installer fails", []string{"STUB_FAIL=wrk"}, "E: Unable to locate package wrk"},
		{"a program is still missing after it", nil, "but wrk is still not there"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := setup(t, without(keys(commands), "wrk"), append([]string{"SETUP_UID=0"}, tt.env...)...)
			if r.code != 1 || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and %q", r.code, r.stderr, tt.want)
			}
		})
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func without(list []string, drop ...string) []string {
	var out []string
	for _, x := range list {
		if !slices.Contains(drop, x) {
			out = append(out, x)
		}
	}
	return out
}
