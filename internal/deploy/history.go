package deploy

import (
	"context"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/release"
)

// Entry is one job version as history shows it.
type Entry struct {
	Release     string            `json:"release"` // its version tag, or vN
	Version     uint64            `json:"version"`
	Tagged      bool              `json:"tagged"`
	Image       string            `json:"image"`
	ImageDigest string            `json:"image_digest,omitempty"`
	ConfigHash  string            `json:"config_hash,omitempty"`
	ConfigPath  string            `json:"config_path,omitempty"`
	Config      map[string]string `json:"config,omitempty"` // nil when its snapshot is gone or edited
	// ConfigEdited is the content hash of a snapshot edited by hand since
	// the release: its values are not the release's, and not shown.
	ConfigEdited string `json:"config_edited,omitempty"`
	GitCommit    string `json:"git_commit,omitempty"`
	SubmittedBy  string `json:"submitted_by,omitempty"`
	// PromotedFrom names the release whose build a promotion carried here.
	PromotedFrom string    `json:"promoted_from,omitempty"`
	SubmitTime   time.Time `json:"submit_time"`
	Stable       bool      `json:"stable"`
	Current      bool      `json:"current"`
	ByDeployer   bool      `json:"by_deployer"` // false: made by hand (nomad job run)
	// CopyOf names the release a version made outside the deployer copied
	// (nomad job scale, revert or run, a UI edit), keeping its meta; Drift
	// says how it differs from that release.
	CopyOf string   `json:"copy_of,omitempty"`
	Drift  []string `json:"drift,omitempty"`
	// SameAs names the newest older version that runs the same release:
	// image, config and every value of the environment file (count,
	// resources, update, datacenters).
	SameAs string `json:"same_as,omitempty"`
	// JudgedCopyOf names the release this version registered again with
	// auto_promote on once its canary passed analysis: a revert to this
	// version needs no promotion, a revert to that one does.
	JudgedCopyOf string   `json:"judged_copy_of,omitempty"`
	Changes      []Change `json:"changes,omitempty"` // since the version before it
}

// Change is one difference between a version and the one before it.
type Change struct {
	Kind  string `json:"kind"` // image, config or job
	Field string `json:"field"`
	Old   string `json:"old"`
	New   string `json:"new"`
}

func (c Change) String() string {
	name := c.Kind + " " + c.Field
	if c.Kind == c.Field {
		name = c.Kind
	}
	switch {
	case c.Old == "":
		return fmt.Sprintf("%s = %q", name, c.New)
	case c.New == "":
		return fmt.Sprintf("%s removed (was %q)", name, c.Old)
	}
	return fmt.Sprintf("%s %q -> %q", name, c.Old, c.New)
}

// History lists the job's retained versions, newest first, with what each
// changed. It takes two reads: the versions with Nomad's diffs, and the
// job's snapshot folder in Consul.
func (d *Deployer) History(ctx context.Context, ns, job string) ([]Entry, error) {
	versions, diffs, _, err := d.Jobs.Versions(job, true, (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx))
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("job %s has no releases in namespace %s (Nomad at %s)", job, ns, d.NomadAddr)
		}
		return nil, fmt.Errorf("read versions of job %s from Nomad at %s: %w", job, d.NomadAddr, err)
	}
	snaps, err := d.Store.All(ctx, ns, job)
	if err != nil {
		return nil, err
	}
	return historyEntries(versions, diffs, snaps), nil
}

// historyEntries makes History's entries of the versions (newest first),
// Nomad's diffs between them, and the job's snapshots by name.
func historyEntries(versions []*nomad.Job, diffs []*nomad.JobDiff, snaps map[string]map[string]string) []Entry {
	entries := make([]Entry, len(versions))
	for i, v := range versions {
		entries[i] = entry(v, snaps)
		entries[i].Current = i == 0
		if !entries[i].ByDeployer {
			continue
		}
		lin := lineage(versions, i)
		entries[i].Drift = lin.Drift
		if lin.Copy {
			// Not the deployer's: whoever made it is not on record.
			entries[i].CopyOf, entries[i].ByDeployer, entries[i].SubmittedBy = releaseName(lin.Own), false, ""
			// Job.Scale copies the tag too: the copy is not that release.
			entries[i].Release, entries[i].Tagged = release.Name(*v.Version), false
		} else if _, who, ok := rollbackTo(v); ok {
			// A rollback keeps the meta of the release it brings back,
			// which names that release's submitter.
			entries[i].SubmittedBy = who
		}
	}
	for i := range entries {
		if i+1 < len(entries) {
			var diff *nomad.JobDiff
			if i < len(diffs) {
				diff = diffs[i]
			}
			entries[i].Changes = changes(&entries[i+1], &entries[i], diff)
		}
		for j := i + 1; j < len(entries); j++ {
			if entries[i].ByDeployer && sameRelease(versions[i], versions[j]) {
				entries[i].SameAs = entries[j].Release
				break
			}
		}
		if r := judgedReleaseOf(versions[i+1:], versions[i]); r != nil {
			entries[i].JudgedCopyOf = entries[slices.Index(versions, r)].Release
		}
	}
	return entries
}

func entry(v *nomad.Job, snaps map[string]map[string]string) Entry {
	e := Entry{
		Version:      *v.Version,
		Release:      release.Name(*v.Version),
		Image:        taskImage(v),
		ImageDigest:  v.Meta[release.MetaImageDigest],
		ConfigHash:   v.Meta[release.MetaConfigHash],
		ConfigPath:   v.Meta[release.MetaConfigPath],
		GitCommit:    v.Meta[release.MetaGitCommit],
		SubmittedBy:  v.Meta[release.MetaSubmittedBy],
		PromotedFrom: v.Meta[release.MetaPromotedFrom],
		Stable:       v.Stable != nil && *v.Stable,
		ByDeployer:   v.Meta[release.MetaConfigPath] != "",
	}
	if v.SubmitTime != nil {
		e.SubmitTime = time.Unix(0, *v.SubmitTime).UTC()
	}
	if v.VersionTag != nil && v.VersionTag.Name != "" {
		e.Release, e.Tagged = v.VersionTag.Name, true
	}
	if e.ConfigPath != "" {
		e.Config = snaps[path.Base(e.ConfigPath)]
		if e.Config != nil && configstore.Hash(e.Config) != e.ConfigHash {
			e.Config, e.ConfigEdited = nil, configstore.Hash(e.Config)
		}
	}
	return e
}

// taskImage is the image the version's first docker task runs.
func taskImage(j *nomad.Job) string {
	for _, tg := range j.TaskGroups {
		for _, t := range tg.Tasks {
			if img, ok := t.Config["image"].(string); ok {
				return img
			}
		}
	}
	return ""
}

// changes lists what changed from old to new: the image, each config key,
// and the job spec fields in Nomad's diff that the release identity does not
// already explain.
func changes(old, new *Entry, diff *nomad.JobDiff) []Change {
	var cs []Change
	if old.Image != new.Image {
		cs = append(cs, Change{Kind: "image", Field: "image", Old: old.Image, New: new.Image})
	}
	if old.ConfigHash != new.ConfigHash || !maps.Equal(old.Config, new.Config) {
		keys := map[string]bool{}
		for k := range old.Config {
			keys[k] = true
		}
		for k := range new.Config {
			keys[k] = true
		}
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			if old.Config[k] != new.Config[k] {
				cs = append(cs, Change{Kind: "config", Field: k, Old: old.Config[k], New: new.Config[k]})
			}
		}
		if old.Config == nil || new.Config == nil {
			cs = append(cs, Change{Kind: "config", Field: "snapshot", Old: old.ConfigHash, New: new.ConfigHash})
		}
	}
	if diff != nil {
		cs = append(cs, specChanges(diff)...)
	}
	return cs
}

// specChanges flattens Nomad's diff into job field changes, leaving out
// what image and config changes already say (meta, UI text, image, the
// template's snapshot path, the release service tag).
func specChanges(d *nomad.JobDiff) []Change {
	var cs []Change
	add := func(path string, fields []*nomad.FieldDiff) {
		for _, f := range fields {
			if f.Type == "None" || explained(path, f.Name) {
				continue
			}
			cs = append(cs, Change{Kind: "job", Field: strings.TrimPrefix(path+"."+f.Name, "."), Old: f.Old, New: f.New})
		}
	}
	var walk func(path string, objs []*nomad.ObjectDiff)
	walk = func(path string, objs []*nomad.ObjectDiff) {
		for _, o := range objs {
			if o.Type == "None" {
				continue
			}
			p := path + "." + o.Name
			add(p, o.Fields)
			walk(p, o.Objects)
		}
	}
	add("", d.Fields)
	walk("", d.Objects)
	for _, tg := range d.TaskGroups {
		p := "group[" + tg.Name + "]"
		add(p, tg.Fields)
		walk(p, tg.Objects)
		for _, t := range tg.Tasks {
			tp := p + ".task[" + t.Name + "]"
			add(tp, t.Fields)
			walk(tp, t.Objects)
		}
	}
	return cs
}

func explained(path, name string) bool {
	switch {
	case strings.HasPrefix(name, "Meta["):
		return true
	case strings.HasSuffix(path, ".UI") && name == "Description":
		return true
	case strings.HasSuffix(path, ".Config") && name == "image":
		return true
	case strings.HasSuffix(path, ".Template") && name == "EmbeddedTmpl":
		return true
	case strings.HasSuffix(path, ".Tags") && name == "Tags":
		return true
	}
	return false
}
