package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/imageref"
	"github.com/kodekloud/counter/internal/release"
)

// A job version's meta says which release the deployer made, but not that
// the version is that release: Nomad's Job.Scale copies the whole job (its
// meta, and its version tag too), the Nomad UI edits the job from its
// submission (the meta's variable included), and nomad job run of an edited
// spec or nomad job revert keep whatever meta the spec has. What a version
// runs is judged here from the version itself, against the version the
// deployer registered for its release.

// Lineage is how a job version relates to the release its meta names.
type Lineage struct {
	// Own is the version the deployer registered for that release (by a
	// submit, a promote or a rollback); the version itself when it is one,
	// nil when its meta names no release.
	Own *nomad.Job
	// Copy says the version was made outside the deployer from Own's job
	// (nomad job scale, a UI edit, nomad job run, nomad job revert).
	Copy bool
	// Drift lists how the version differs from Own, or from its own meta:
	// empty when it runs Own's release exactly.
	Drift []string
}

// lineage finds what versions[i] (versions newest first, as Nomad lists
// them) runs.
func lineage(versions []*nomad.Job, i int) Lineage {
	v := versions[i]
	if v.Meta[release.MetaConfigPath] == "" {
		return Lineage{}
	}
	own, copied := ownVersion(versions, i)
	l := Lineage{Own: own, Copy: copied}
	l.Drift = selfDrift(v, !copied)
	if !copied {
		return l
	}
	name := releaseName(own)
	made := fmt.Sprintf("version %d, not made by the deployer", *v.Version)
	if ds := releaseDiff(own, v); len(ds) > 0 {
		l.Drift = append(l.Drift, fmt.Sprintf("%s since %s (%s)", differences(ds), name, made))
	} else if fields := specDiff(own, v); len(fields) > 0 {
		l.Drift = append(l.Drift, fmt.Sprintf("the job spec differs from %s's (version %d) in %s (%s)",
			name, *own.Version, strings.Join(fields, ", "), made))
	}
	return l
}

// ownVersion finds the version the deployer registered for the release
// versions[i] names in its meta, and whether versions[i] is a copy of it.
func ownVersion(versions []*nomad.Job, i int) (*nomad.Job, bool) {
	v := versions[i]
	if v.VersionTag != nil && v.VersionTag.Name != "" {
		// Nomad refuses a tag name another version has; two versions with
		// one name mean the newer copied the older's job, tag and all
		// (Job.Scale does).
		for _, o := range versions[i+1:] {
			if o.VersionTag != nil && o.VersionTag.Name == v.VersionTag.Name {
				return o, true
			}
		}
		return v, false
	}
	// Untagged: the deployer tags every version it makes, so one with the
	// meta of a tagged version is a copy (nomad job revert, a UI edit, nomad
	// job run), of the newest such version that it equals, else of the
	// newest.
	var newest *nomad.Job
	for j, o := range versions[i+1:] {
		if o.VersionTag == nil || !maps.Equal(o.Meta, v.Meta) {
			continue
		}
		if own, copied := ownVersion(versions, i+1+j); copied {
			o = own
		}
		if len(releaseDiff(o, v)) == 0 && sameSpec(o, v) {
			return o, true
		}
		if newest == nil {
			newest = o
		}
	}
	if newest != nil {
		return newest, true
	}
	// None: the deployer's own version, whose tag is missing (a failed
	// tag is a warning only).
	return v, false
}

// isOwnRelease says, without the version history, that v is a version the
// deployer registered: tagged vN with its own number N. Anything else needs
// the history to tell.
func isOwnRelease(v *nomad.Job) bool {
	return v.VersionTag != nil && v.Version != nil && v.VersionTag.Name == release.Name(*v.Version)
}

func releaseName(v *nomad.Job) string {
	if v.VersionTag != nil && v.VersionTag.Name != "" {
		return v.VersionTag.Name
	}
	return release.Name(*v.Version)
}

// selfDrift checks v against its own meta: the templates must read the
// snapshot the meta names, and, when image is set, each task must run the
// image the meta names. Neither needs another version.
func selfDrift(v *nomad.Job, image bool) []string {
	var drift []string
	path := v.Meta[release.MetaConfigPath]
	for _, p := range readPaths(v) {
		if p != path {
			drift = append(drift, fmt.Sprintf("its template reads config at %s, not at its release's snapshot %s", p, path))
		}
	}
	if want := metaImage(v); image && want != "" {
		for _, tg := range v.TaskGroups {
			for _, t := range tg.Tasks {
				if img := imageOf(t); img != "" && img != want {
					drift = append(drift, fmt.Sprintf("task %s runs image %s, not its release's %s", t.Name, img, want))
				}
			}
		}
	}
	return drift
}

// metaImage is the pinned image v's meta names; "" when it names none.
func metaImage(v *nomad.Job) string {
	ref, err := imageref.Parse(v.Meta[release.MetaImage])
	if err != nil {
		return ""
	}
	if d := v.Meta[release.MetaImageDigest]; d != "" {
		ref.Digest = d
	}
	return ref.Pinned()
}

// keyPath matches the Consul key a template reads: {{ key "PATH/NAME" }}.
var keyPath = regexp.MustCompile(`\{\{-?\s*key\s+"([^"]+)/[^"/]+"`)

// readPaths lists the snapshot folders v's templates read, each once.
func readPaths(v *nomad.Job) []string {
	var paths []string
	for _, tg := range v.TaskGroups {
		for _, t := range tg.Tasks {
			for _, tmpl := range t.Templates {
				if tmpl == nil || tmpl.EmbeddedTmpl == nil {
					continue
				}
				for _, m := range keyPath.FindAllStringSubmatch(*tmpl.EmbeddedTmpl, -1) {
					if !slices.Contains(paths, m[1]) {
						paths = append(paths, m[1])
					}
				}
			}
		}
	}
	return paths
}

// sameSpec says whether a and b are the same job but for what Nomad sets
// per version (its number, indexes, times, status, stability, tag, the
// token that registered it) and whether it is stopped (which status
// reports on its own).
func sameSpec(a, b *nomad.Job) bool {
	return len(specDiff(a, b)) == 0
}

// specDiff names the fields of the job spec in which a and b differ, as
// paths of its JSON (TaskGroups[web].Tasks[app].Env.EDITED), at most a
// few.
func specDiff(a, b *nomad.Job) []string {
	var fields []string
	diffJSON("", specOf(a), specOf(b), &fields)
	return fields
}

func specOf(j *nomad.Job) any {
	c := *j
	c.Version, c.Stable, c.VersionTag, c.SubmitTime = nil, nil, nil, nil
	c.CreateIndex, c.ModifyIndex, c.JobModifyIndex = nil, nil, nil
	c.Status, c.StatusDescription, c.Stop, c.NomadTokenID = nil, nil, nil, nil
	b, err := json.Marshal(&c)
	if err != nil {
		return err.Error()
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err.Error()
	}
	dedupeConstraints(v)
	return v
}

// dedupeConstraints drops repeated constraints from every Constraints
// list in v: nomad job revert registers the version again, and Nomad's
// implied-constraints hook then appends its "${attr.nomad.version}"
// constraint a second time (Nomad 1.11.2). A repeated constraint places
// nothing differently.
func dedupeConstraints(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if list, ok := e.([]any); ok && k == "Constraints" {
				var seen []string
				var kept []any
				for _, c := range list {
					b, _ := json.Marshal(c)
					if !slices.Contains(seen, string(b)) {
						seen, kept = append(seen, string(b)), append(kept, c)
					}
				}
				x[k] = kept
				continue
			}
			dedupeConstraints(e)
		}
	case []any:
		for _, e := range x {
			dedupeConstraints(e)
		}
	}
}

// maxSpecFields bounds the fields specDiff names: enough to say where.
const maxSpecFields = 5

// diffJSON adds to fields the paths under path where a and b differ.
// Elements of a list are named by their Name when they have one.
func diffJSON(path string, a, b any, fields *[]string) {
	if len(*fields) >= maxSpecFields {
		return
	}
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			break
		}
		keys := slices.Sorted(maps.Keys(x))
		for k := range y {
			if _, ok := x[k]; !ok {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			diffJSON(strings.TrimPrefix(path+"."+k, "."), x[k], y[k], fields)
		}
		return
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			break
		}
		for i := range x {
			name := fmt.Sprint(i)
			if m, ok := x[i].(map[string]any); ok && m["Name"] != nil {
				name = fmt.Sprint(m["Name"])
			}
			diffJSON(path+"["+name+"]", x[i], y[i], fields)
		}
		return
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		*fields = append(*fields, path)
	}
}

// rollbackTo reads the tag the deployer's rollback gives the version it
// makes, "rollback to v7 by WHO": the release it went back to and who.
func rollbackTo(v *nomad.Job) (to, who string, ok bool) {
	if v.VersionTag == nil {
		return "", "", false
	}
	rest, ok := strings.CutPrefix(v.VersionTag.Description, "rollback to ")
	if !ok {
		return "", "", false
	}
	to, who, _ = strings.Cut(rest, " by ")
	return to, who, to != ""
}

// origin is the version whose release versions[i] brought back, following
// the deployer's rollbacks and copies made outside it to the version that
// first ran it; versions[i] itself when it is a release of its own.
func origin(versions []*nomad.Job, i int) *nomad.Job {
	for range versions {
		v := versions[i]
		next := -1
		if to, _, ok := rollbackTo(v); ok {
			next = slices.IndexFunc(versions, func(o *nomad.Job) bool {
				return o.VersionTag != nil && o.VersionTag.Name == to && *o.Version < *v.Version
			})
		} else if own, copied := ownVersion(versions, i); copied {
			next = slices.Index(versions, own)
		}
		if next < 0 || next == i {
			return v
		}
		i = next
	}
	return versions[i]
}
