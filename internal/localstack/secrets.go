package localstack

import (
	"fmt"
	"os"
	"path/filepath"
)

// Secrets returns the files of the stack's secrets folder in dir (its
// management tokens, the deployer's and the operator's), by name: what a
// backup of the stack keeps beside its snapshots, since the snapshots
// bring back the ACLs those tokens belong to.
func Secrets(dir string) (map[string][]byte, error) {
	entries, err := os.ReadDir(filepath.Join(dir, secretsDir))
	if err != nil {
		return nil, fmt.Errorf("the stack's secrets: %w", err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, secretsDir, e.Name()))
		if err != nil {
			return nil, err
		}
		files[e.Name()] = b
	}
	return files, nil
}

// PutSecrets writes files into the stack's secrets folder in dir, each
// replacing the one of its name whole (a temporary file, synced, renamed),
// as a restore does once the ACLs they belong to are back. Agents read
// them when they start: the stack must be started again.
func PutSecrets(dir string, files map[string][]byte) error {
	folder := filepath.Join(dir, secretsDir)
	if err := os.MkdirAll(folder, 0o700); err != nil {
		return err
	}
	for name, b := range files {
		if name != filepath.Base(name) {
			return fmt.Errorf("secret file %q: want a base name", name)
		}
		f, err := os.CreateTemp(folder, "."+name+".new-")
		if err != nil {
			return err
		}
		_, err = f.Write(b)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(f.Name(), filepath.Join(folder, name))
		}
		if err != nil {
			_ = os.Remove(f.Name())
			return fmt.Errorf("write %s: %w", filepath.Join(folder, name), err)
		}
	}
	return nil
}
