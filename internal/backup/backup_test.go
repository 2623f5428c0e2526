package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// archive builds a snapshot archive as Nomad and Consul write one, with
// the sums listed for meta.json and state.bin; edit may change the files
// after their sums were taken.
func archive(t *testing.T, edit func(files map[string][]byte)) []byte {
	t.Helper()
	files := map[string][]byte{"meta.json": []byte(`{"Index":42,"Term":2}`), "state.bin": []byte("raft state")}
	var sums strings.Builder
	for _, name := range []string{"meta.json", "state.bin"} {
		fmt.Fprintf(&sums, "%x  %s\n", sha256.Sum256(files[name]), name)
	}
	files["SHA256SUMS"] = []byte(sums.String())
	if edit != nil {
		edit(files)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, name := range []string{"meta.json", "state.bin", "SHA256SUMS"} {
		b, ok := files[name]
		if !ok {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// writeBackup writes a backup folder of two good archives and the
// manifest that describes them, and returns its path.
func writeBackup(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	m := Manifest{Format: format, Nomad: Half{File: NomadFile}, Consul: Half{File: ConsulFile}}
	for _, h := range []*Half{&m.Nomad, &m.Consul} {
		if err := os.WriteFile(filepath.Join(dir, h.File), archive(t, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := fill(dir, h); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		wantErr string // "" for none
	}{
		{"accepts/a whole backup", func(*testing.T, string) {}, ""},
		{"refuses/no manifest", func(t *testing.T, dir string) { rm(t, dir, ManifestFile) }, "manifest.json: no such file"},
		{"refuses/another format", func(t *testing.T, dir string) {
			edit(t, dir, func(m *Manifest) { m.Format = 2 })
		}, "format 2"},
		{"refuses/a missing half", func(t *testing.T, dir string) { rm(t, dir, ConsulFile) }, "Consul's half of backup"},
		{"refuses/a half changed since", func(t *testing.T, dir string) {
			write(t, dir, NomadFile, archive(t, func(f map[string][]byte) { f["state.bin"] = []byte("other state") }))
		}, "the file changed since the backup"},
		{"refuses/an archive whose state does not match its sums", func(t *testing.T, dir string) {
			rewrite(t, dir, ConsulFile, archive(t, func(f map[string][]byte) { f["state.bin"] = []byte("flipped") }))
		}, "the snapshot is corrupted"},
		{"refuses/an archive without sums", func(t *testing.T, dir string) {
			rewrite(t, dir, NomadFile, archive(t, func(f map[string][]byte) { delete(f, "SHA256SUMS") }))
		}, "no SHA256SUMS"},
		{"refuses/a file that is no archive", func(t *testing.T, dir string) {
			rewrite(t, dir, NomadFile, []byte("not gzip"))
		}, "is not a snapshot archive"},
		{"refuses/a kept file changed since", func(t *testing.T, dir string) {
			edit(t, dir, func(m *Manifest) { m.Kept = []Kept{{Name: "token", Size: 3, SHA256: "x"}} })
			if err := os.MkdirAll(filepath.Join(dir, KeptDir), 0o700); err != nil {
				t.Fatal(err)
			}
			write(t, dir, filepath.Join(KeptDir, "token"), []byte("abc"))
		}, "the file changed since the backup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeBackup(t)
			tt.damage(t, dir)
			_, err := Load(dir)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Load: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Load: %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}

// TestSaveLeavesNothingOnFailure: a backup that cannot be made leaves no
// folder, whole or partial, and an existing backup is never replaced.
func TestSaveLeavesNothingOnFailure(t *testing.T) {
	parent := t.TempDir()
	// Nothing listens on port 1: the first call fails.
	nc, err := nomad.NewClient(&nomad.Config{Address: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := consul.NewClient(&consul.Config{Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	s := Servers{Nomad: nc, Consul: cc, NomadAddr: "http://127.0.0.1:1", ConsulAddr: "127.0.0.1:1"}
	out := filepath.Join(parent, "b")
	if _, err := Save(context.Background(), s, out, Options{Keep: map[string][]byte{"token": []byte("t")}}); err == nil {
		t.Fatal("Save with no server answering: no error")
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("a failed Save left %v in %s", entries, parent)
	}

	existing := writeBackup(t)
	before, _ := os.ReadFile(filepath.Join(existing, ManifestFile))
	if _, err := Save(context.Background(), s, existing, Options{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("Save into an existing backup: %v, want it refused", err)
	}
	if after, _ := os.ReadFile(filepath.Join(existing, ManifestFile)); !bytes.Equal(before, after) {
		t.Error("a refused Save changed the existing backup")
	}

	for _, name := range []string{"../escape", "a/b", ".."} {
		if _, err := Save(context.Background(), s, filepath.Join(parent, "c"), Options{Keep: map[string][]byte{name: nil}}); err == nil {
			t.Errorf("Save keeping a file named %q: no error", name)
		}
	}
}

func rm(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// rewrite replaces a half and makes the manifest agree with it, so that
// only the archive's own check can catch it.
func rewrite(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	write(t, dir, name, b)
	sum, err := sumFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	edit(t, dir, func(m *Manifest) {
		for _, h := range []*Half{&m.Nomad, &m.Consul} {
			if h.File == name {
				h.Size, h.SHA256 = sum.Size, sum.SHA256
			}
		}
	})
}

func edit(t *testing.T, dir string, change func(*Manifest)) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	change(&m)
	b, _ = json.Marshal(m)
	write(t, dir, ManifestFile, b)
}

// TestTargetsSkipsUnreadableFiles: a typo in one environment file leaves
// that environment out of the manifest, with a warning, and never stops
// the backup.
func TestTargetsSkipsUnreadableFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "dev.hcl", []byte("job = \"counter-dev\"\ndatacenters = [\"dc1\"]\ncount = 1\nconfig {\n  HOST = \"redis\"\n  PORT = 6379\n}\n"))
	write(t, dir, "prod.hcl", []byte("job = \n"))
	var warn strings.Builder
	got := Targets(dir, &warn)
	if len(got) != 1 {
		t.Fatalf("Targets = %+v, want dev's job alone; warnings: %s", got, warn.String())
	}
	if got[0] != (Target{Name: "dev", Namespace: "default", Job: "counter-dev"}) {
		t.Errorf("Targets = %+v, want dev's job alone", got)
	}
	if !strings.Contains(warn.String(), "environment prod") {
		t.Errorf("no warning names prod: %q", warn.String())
	}
}
