package envtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTestingPageCommandsRun runs, as written and from the repository's
// root, each command of the block of docs/testing.md marked as run by it:
// the ones that run one package and one test with no server.
func TestTestingPageCommandsRun(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join(root, "docs", "testing.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(page), "<!-- run by TestTestingPageCommandsRun -->\n```sh\n")
	if !ok {
		t.Fatal("docs/testing.md has no sh block marked <!-- run by TestTestingPageCommandsRun -->")
	}
	block, _, ok := strings.Cut(after, "```")
	if !ok {
		t.Fatal("docs/testing.md: the block marked <!-- run by TestTestingPageCommandsRun --> does not end")
	}
	n := 0
	for _, line := range strings.Split(block, "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		n++
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", line)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		switch {
		case err != nil:
			t.Errorf("docs/testing.md: %s: %v\n%s", line, err, out)
		case strings.Contains(string(out), "no tests to run"):
			t.Errorf("docs/testing.md: %s ran no test:\n%s", line, out)
		}
	}
	if n == 0 {
		t.Error("docs/testing.md: the block marked <!-- run by TestTestingPageCommandsRun --> has no command")
	}
}
