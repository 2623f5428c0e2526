// Package backup saves and restores the two halves of every release
// together: Nomad's state (the job versions) and Consul's (the config
// snapshots they read), as one folder with a manifest. A release needs
// both, so a backup is never one without the other.
package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// The files of a backup folder.
const (
	ManifestFile = "manifest.json"
	NomadFile    = "nomad.snap"
	ConsulFile   = "consul.snap"
	// KeptDir holds the files a backup keeps beside the pair (Options.Keep).
	KeptDir = "kept"
)

// format is the manifest's version; Restore refuses any other.
const format = 1

// Manifest describes a backup: when it was made, from which servers, what
// each half is (file, size, SHA-256, Raft index), and what releases each
// environment had, so that Restore can check the files before it changes
// anything and the restored jobs after.
type Manifest struct {
	Format       int           `json:"format"`
	Created      time.Time     `json:"created"`
	Nomad        Half          `json:"nomad"`
	Consul       Half          `json:"consul"`
	Environments []Environment `json:"environments"`
	// Kept are the files kept beside the pair, under KeptDir.
	Kept []Kept `json:"kept,omitempty"`
}

// Half is one server's snapshot in a backup.
type Half struct {
	Address string `json:"address"`
	Region  string `json:"region,omitempty"`     // Nomad's
	DC      string `json:"datacenter,omitempty"` // Consul's
	File    string `json:"file"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
	// Index is the Raft index the snapshot was taken at.
	Index uint64 `json:"index"`
}

// Environment is one environment's job as the backup found it.
type Environment struct {
	Name      string `json:"environment"`
	Namespace string `json:"namespace"`
	Job       string `json:"job"`
	// Registered is false for a job Nomad did not have.
	Registered bool      `json:"registered"`
	Current    uint64    `json:"current_version"`
	Versions   []Version `json:"versions,omitempty"`
}

// Version is one retained job version: its number, its release tag (vN)
// if it has one, and the config snapshot its meta names.
type Version struct {
	Version    uint64 `json:"version"`
	Tag        string `json:"tag,omitempty"`
	ConfigPath string `json:"config_path,omitempty"`
	// ConfigSaved says Consul held the snapshot when its half was saved
	// (one deleted by hand is not, and a restore does not wait for it).
	ConfigSaved bool `json:"config_saved"`
}

// Kept is a file kept beside the pair: the management tokens, say, without
// which a restored cluster cannot be used.
type Kept struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Target is an environment whose job a backup records.
type Target struct{ Name, Namespace, Job string }

// Servers are the clients of the cluster to back up or restore to, with
// tokens that may take and restore snapshots (management tokens).
type Servers struct {
	Nomad  *nomad.Client
	Consul *consul.Client
	// NomadAddr and ConsulAddr name them in the manifest.
	NomadAddr, ConsulAddr string
}

// Options are what Save writes beside the snapshots.
type Options struct {
	// Environments are the jobs whose versions the manifest lists.
	Environments []Target
	// Keep are files to keep in the backup beside the pair, by name
	// (a base name, no folders): written with mode 0600.
	Keep map[string][]byte
	// Progress receives a line per step; nil for none.
	Progress io.Writer
}

// configPathMeta is the job meta key that names a release's snapshot
// (internal/release).
const configPathMeta = "release_config_path"

// Save writes a backup of the servers to the folder out, which must not
// exist: Nomad's snapshot first, then Consul's (a release writes its
// config snapshot before its job version, and snapshots are write-once,
// so every version in Nomad's half has its config in Consul's half), the
// kept files, then the manifest. It writes into a temporary folder beside
// out, syncs every file, and renames it to out only when all is written:
// out is a whole backup or nothing.
func Save(ctx context.Context, s Servers, out string, o Options) (m *Manifest, err error) {
	say := progress(o.Progress)
	out = filepath.Clean(out)
	if _, err := os.Lstat(out); err == nil {
		return nil, fmt.Errorf("backup %s already exists: a backup is never overwritten; name another folder", out)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	parent := filepath.Dir(out)
	if fi, err := os.Stat(parent); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("the folder %s that would hold the backup does not exist", parent)
	}
	for name := range o.Keep {
		if name != filepath.Base(name) || name == "." || name == ".." {
			return nil, fmt.Errorf("kept file %q: want a base name, no folders", name)
		}
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(out)+".partial-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o700); err != nil {
		return nil, err
	}
	m = &Manifest{Format: format, Created: time.Now().UTC()}
	m.Nomad = Half{Address: s.NomadAddr, File: NomadFile}
	if m.Nomad.Region, err = s.Nomad.Agent().Region(); err != nil {
		return nil, fmt.Errorf("nomad at %s: %w", s.NomadAddr, err)
	}
	m.Consul = Half{Address: s.ConsulAddr, File: ConsulFile}
	self, err := s.Consul.Agent().Self()
	if err != nil {
		return nil, fmt.Errorf("consul at %s: %w", s.ConsulAddr, err)
	}
	m.Consul.DC, _ = self["Config"]["Datacenter"].(string)

	// The manifest's versions are what Nomad's snapshot holds: read them
	// before and after it, and again if a release came in between.
	for attempt := 1; ; attempt++ {
		before, err := readEnvironments(ctx, s.Nomad, o.Environments)
		if err != nil {
			return nil, err
		}
		say("==> saving Nomad's snapshot from %s", s.NomadAddr)
		if err := saveTo(filepath.Join(tmp, NomadFile), func() (io.ReadCloser, error) {
			return s.Nomad.Operator().Snapshot((&nomad.QueryOptions{}).WithContext(ctx))
		}); err != nil {
			return nil, fmt.Errorf("nomad snapshot from %s: %w", s.NomadAddr, err)
		}
		after, err := readEnvironments(ctx, s.Nomad, o.Environments)
		if err != nil {
			return nil, err
		}
		if sameEnvironments(before, after) {
			m.Environments = after
			break
		}
		if attempt == 3 {
			return nil, fmt.Errorf("a release changed a job during each of 3 Nomad snapshots: try again when no release runs")
		}
		say("    a release changed a job while the snapshot was taken: taking it again")
	}
	say("==> saving Consul's snapshot from %s", s.ConsulAddr)
	if err := saveTo(filepath.Join(tmp, ConsulFile), func() (io.ReadCloser, error) {
		rc, _, err := s.Consul.Snapshot().Save((&consul.QueryOptions{}).WithContext(ctx))
		return rc, err
	}); err != nil {
		return nil, fmt.Errorf("consul snapshot from %s: %w", s.ConsulAddr, err)
	}
	if err := markSaved(ctx, s.Consul, m.Environments); err != nil {
		return nil, err
	}
	for _, h := range []*Half{&m.Nomad, &m.Consul} {
		if err := fill(tmp, h); err != nil {
			return nil, err
		}
	}
	if len(o.Keep) > 0 {
		if err := os.Mkdir(filepath.Join(tmp, KeptDir), 0o700); err != nil {
			return nil, err
		}
		for _, name := range slicesSorted(o.Keep) {
			path := filepath.Join(tmp, KeptDir, name)
			if err := writeSynced(path, o.Keep[name], 0o600); err != nil {
				return nil, err
			}
			sum, err := sumFile(path)
			if err != nil {
				return nil, err
			}
			m.Kept = append(m.Kept, Kept{Name: name, Size: sum.Size, SHA256: sum.SHA256})
		}
		if err := syncDir(filepath.Join(tmp, KeptDir)); err != nil {
			return nil, err
		}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeSynced(filepath.Join(tmp, ManifestFile), append(b, '\n'), 0o600); err != nil {
		return nil, err
	}
	if err := syncDir(tmp); err != nil {
		return nil, err
	}
	// Rename does not replace a folder that appeared meanwhile unless it
	// is empty; check again so that none is ever replaced.
	if _, err := os.Lstat(out); err == nil {
		return nil, fmt.Errorf("backup %s appeared while this one was written: a backup is never overwritten", out)
	}
	if err := os.Rename(tmp, out); err != nil {
		return nil, err
	}
	if err := syncDir(parent); err != nil {
		return m, fmt.Errorf("backup %s written, but its folder could not be synced: %w", out, err)
	}
	return m, nil
}

// fill records the size, SHA-256 and Raft index of h's file in dir,
// checking that it is a whole snapshot archive.
func fill(dir string, h *Half) error {
	path := filepath.Join(dir, h.File)
	meta, err := verifyArchive(path)
	if err != nil {
		return err
	}
	sum, err := sumFile(path)
	if err != nil {
		return err
	}
	h.Size, h.SHA256, h.Index = sum.Size, sum.SHA256, meta.Index
	return nil
}

// saveTo writes what open returns to path and syncs it. Nomad's reader
// checks the snapshot's digest as it ends.
func saveTo(path string, open func() (io.ReadCloser, error)) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := rc.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeSynced(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readEnvironments reads each target's retained versions.
func readEnvironments(ctx context.Context, nc *nomad.Client, targets []Target) ([]Environment, error) {
	envs := make([]Environment, 0, len(targets))
	for _, t := range targets {
		e := Environment{Name: t.Name, Namespace: t.Namespace, Job: t.Job}
		q := (&nomad.QueryOptions{Namespace: t.Namespace}).WithContext(ctx)
		versions, _, _, err := nc.Jobs().Versions(t.Job, false, q)
		if isNotFound(err) {
			envs = append(envs, e)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("versions of %s (environment %s): %w", t.Job, t.Name, err)
		}
		e.Registered = true
		for _, v := range versions {
			ver := Version{Version: *v.Version, ConfigPath: v.Meta[configPathMeta]}
			if v.VersionTag != nil {
				ver.Tag = v.VersionTag.Name
			}
			e.Versions = append(e.Versions, ver)
			e.Current = max(e.Current, ver.Version)
		}
		envs = append(envs, e)
	}
	return envs, nil
}

// markSaved records which versions' config snapshots Consul holds, read
// after its snapshot was taken: snapshots are write-once, and each was
// written before its version, so one there now was there then.
func markSaved(ctx context.Context, cc *consul.Client, envs []Environment) error {
	for i := range envs {
		for j := range envs[i].Versions {
			v := &envs[i].Versions[j]
			if v.ConfigPath == "" {
				continue
			}
			keys, _, err := cc.KV().Keys(v.ConfigPath+"/", "", (&consul.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return fmt.Errorf("consul: config snapshot of %s version %d: %w", envs[i].Job, v.Version, err)
			}
			v.ConfigSaved = len(keys) > 0
		}
	}
	return nil
}

func sameEnvironments(a, b []Environment) bool {
	return slices.EqualFunc(a, b, func(x, y Environment) bool {
		return x.Name == y.Name && x.Registered == y.Registered && x.Current == y.Current && slices.EqualFunc(x.Versions, y.Versions, func(v, w Version) bool {
			return v.Version == w.Version && v.Tag == w.Tag && v.ConfigPath == w.ConfigPath
		})
	})
}

// isNotFound reports whether err is Nomad's 404.
func isNotFound(err error) bool {
	var uerr nomad.UnexpectedResponseError
	return errors.As(err, &uerr) && uerr.StatusCode() == 404
}

func progress(w io.Writer) func(format string, args ...any) {
	return func(format string, args ...any) {
		if w != nil {
			fmt.Fprintf(w, format+"\n", args...)
		}
	}
}

func slicesSorted(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Summary is one line per environment: the releases the backup holds.
func (m *Manifest) Summary() []string {
	var lines []string
	for _, e := range m.Environments {
		if !e.Registered {
			lines = append(lines, fmt.Sprintf("%s: job %s not registered", e.Name, e.Job))
			continue
		}
		var tags []string
		for _, v := range e.Versions {
			if v.Tag != "" {
				tags = append(tags, v.Tag)
			}
		}
		slices.Reverse(tags)
		lines = append(lines, fmt.Sprintf("%s: job %s at version %d, %d versions (releases %s)",
			e.Name, e.Job, e.Current, len(e.Versions), strings.Join(tags, " ")))
	}
	return lines
}
