package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kodekloud/counter/internal/localstack"
)

// The lines docs/secured-cluster.md gives for using the local stack's
// management tokens are the ones make up prints for a stack in .stack at
// the stack's fixed ports, and, pasted in the repository's root, they set
// the addresses and the tokens kept in .stack/secrets.
func TestDocsStackTokenExportsWorkAsWritten(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "secured-cluster.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "\n<!-- run by TestDocsStackTokenExportsWorkAsWritten -->\n```sh\n")
	block, _, closed := strings.Cut(after, "\n```")
	if !ok || !closed {
		t.Fatal("docs/secured-cluster.md has no ```sh block marked as run by TestDocsStackTokenExportsWorkAsWritten")
	}

	var printed bytes.Buffer
	printAddrs(&printed, &localstack.Stack{Dir: ".stack", ACL: true, NomadAddr: "http://127.0.0.1:4646", ConsulAddr: "127.0.0.1:8500"})
	for _, line := range strings.Split(block, "\n") {
		if !strings.Contains(printed.String(), "  "+line+"\n") {
			t.Errorf("make up does not print %q; it prints:\n%s", line, printed.String())
		}
	}

	dir := t.TempDir()
	nomadFile, consulFile := localstack.TokenFiles(filepath.Join(dir, ".stack"))
	for file, secret := range map[string]string{nomadFile: "nomad-secret", consulFile: "consul-secret"} {
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", block+"\nprintf '%s\\n' \"$NOMAD_ADDR\" \"$NOMAD_TOKEN\" \"$CONSUL_HTTP_ADDR\" \"$CONSUL_HTTP_TOKEN\"")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the block failed: %v\n%s", err, out)
	}
	want := "http://127.0.0.1:4646\nnomad-secret\n127.0.0.1:8500\nconsul-secret\n"
	if string(out) != want {
		t.Errorf("after the block, NOMAD_ADDR, NOMAD_TOKEN, CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN are\n%s\nwant\n%s", out, want)
	}
}
