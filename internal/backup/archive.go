package backup

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// snapshotMeta is what a Raft snapshot archive's meta.json says of it:
// Nomad and Consul write the same archive (gzip'd tar of meta.json,
// state.bin and SHA256SUMS).
type snapshotMeta struct {
	Index uint64 `json:"Index"`
	Term  uint64 `json:"Term"`
}

// fileSum is a file's size and SHA-256, as the manifest records them.
type fileSum struct {
	Size   int64
	SHA256 string
}

// sumFile returns the size and SHA-256 of the file at path.
func sumFile(path string) (fileSum, error) {
	f, err := os.Open(path)
	if err != nil {
		return fileSum{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fileSum{}, fmt.Errorf("read %s: %w", path, err)
	}
	return fileSum{n, hex.EncodeToString(h.Sum(nil))}, nil
}

// verifyArchive reads the snapshot archive at path whole and checks it as
// `consul snapshot inspect` does: a gzip'd tar holding meta.json and
// state.bin whose SHA-256 sums match its SHA256SUMS. A truncated or
// corrupted file, or one that is not a snapshot, fails here, before a
// server is given it.
func verifyArchive(path string) (snapshotMeta, error) {
	var meta snapshotMeta
	f, err := os.Open(path)
	if err != nil {
		return meta, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return meta, fmt.Errorf("%s is not a snapshot archive (gzip): %w", path, err)
	}
	sums := map[string]string{}
	var listed []byte
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return meta, fmt.Errorf("%s: reading the archive: %w", path, err)
		}
		h := sha256.New()
		var body io.Reader = tr
		var metaJSON strings.Builder
		switch hdr.Name {
		case "meta.json":
			body = io.TeeReader(tr, &metaJSON)
		case "SHA256SUMS":
			b, err := io.ReadAll(tr)
			if err != nil {
				return meta, fmt.Errorf("%s: reading SHA256SUMS: %w", path, err)
			}
			listed = b
			continue
		}
		if _, err := io.Copy(h, body); err != nil {
			return meta, fmt.Errorf("%s: reading %s: %w", path, hdr.Name, err)
		}
		sums[hdr.Name] = hex.EncodeToString(h.Sum(nil))
		if hdr.Name == "meta.json" {
			if err := json.Unmarshal([]byte(metaJSON.String()), &meta); err != nil {
				return meta, fmt.Errorf("%s: meta.json: %w", path, err)
			}
		}
	}
	if listed == nil {
		return meta, fmt.Errorf("%s: no SHA256SUMS in the archive: not a Nomad or Consul snapshot", path)
	}
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(listed)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			return meta, fmt.Errorf("%s: SHA256SUMS line %q is not \"SUM  NAME\"", path, line)
		}
		want[name] = sum
	}
	for _, name := range []string{"meta.json", "state.bin"} {
		switch got, ok := sums[name]; {
		case !ok:
			return meta, fmt.Errorf("%s: no %s in the archive: not a Nomad or Consul snapshot", path, name)
		case got != want[name]:
			return meta, fmt.Errorf("%s: %s has SHA-256 %s, its SHA256SUMS says %s: the snapshot is corrupted", path, name, got, want[name])
		}
	}
	return meta, nil
}
