package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// globalManagement is the ID of Consul's built-in management policy.
const globalManagement = "00000000-0000-0000-0000-000000000001"

// Load reads the backup in dir and checks it whole before anything uses
// it: the manifest, then each snapshot's size and SHA-256 against the
// manifest and its archive against its own sums, then each kept file.
func Load(dir string) (*Manifest, error) {
	path := filepath.Join(dir, ManifestFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", dir, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if m.Format != format {
		return nil, fmt.Errorf("%s: format %d, this deployer reads format %d", path, m.Format, format)
	}
	for _, h := range []struct {
		name string
		half Half
		want string
	}{{"Nomad", m.Nomad, NomadFile}, {"Consul", m.Consul, ConsulFile}} {
		if h.half.File != h.want {
			return nil, fmt.Errorf("%s: %s's snapshot is %q, want %q", path, h.name, h.half.File, h.want)
		}
		file := filepath.Join(dir, h.half.File)
		sum, err := sumFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s's half of backup %s: %w", h.name, dir, err)
		}
		if sum.Size != h.half.Size || sum.SHA256 != h.half.SHA256 {
			return nil, fmt.Errorf("%s is %d bytes with SHA-256 %s; %s says %d bytes, %s: the file changed since the backup",
				file, sum.Size, sum.SHA256, path, h.half.Size, h.half.SHA256)
		}
		if _, err := verifyArchive(file); err != nil {
			return nil, err
		}
	}
	for _, k := range m.Kept {
		file := filepath.Join(dir, KeptDir, k.Name)
		if k.Name != filepath.Base(k.Name) {
			return nil, fmt.Errorf("%s: kept file %q is not a base name", path, k.Name)
		}
		sum, err := sumFile(file)
		if err != nil {
			return nil, fmt.Errorf("kept file of backup %s: %w", dir, err)
		}
		if sum.Size != k.Size || sum.SHA256 != k.SHA256 {
			return nil, fmt.Errorf("%s is %d bytes with SHA-256 %s; %s says %d bytes, %s: the file changed since the backup",
				file, sum.Size, sum.SHA256, path, k.Size, k.SHA256)
		}
	}
	return &m, nil
}

// KeptFile reads a file the backup in dir kept beside the pair.
func KeptFile(dir, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(dir, KeptDir, filepath.Base(name)))
}

// RestoreOptions say how long Restore waits for the restored jobs and
// where it says what it waits for.
type RestoreOptions struct {
	Wait     time.Duration // 0: 2 minutes
	Progress io.Writer
	// After, when set, returns the clients to check the restored state
	// with: the restored ACLs are the backup's, in which the tokens that
	// restored it may not exist. Nil checks with s's clients.
	After func() (Servers, error)
}

// Result is what Restore restored.
type Result struct {
	*Manifest
	// Retired are the Nomad client nodes of the restored state that no
	// server reaches (the machines of the backed-up cluster, gone), which
	// Restore purged so that Nomad places their allocations again at once.
	Retired []string `json:"retired_nomad_nodes,omitempty"`
	// Renamed are the Consul nodes of the restored state whose names
	// running agents have under new IDs, which Restore deregistered.
	Renamed []string `json:"retired_consul_nodes,omitempty"`
}

// Restore replaces the state of the servers with the backup in dir, which
// Load checks first: Consul's half, then Nomad's (a job version needs its
// config snapshot, as when it was released). It checks before changing
// anything that both tokens may restore a snapshot. Then it waits until
// every environment's job has the versions and tags the manifest lists,
// and each version's config snapshot is in Consul; then it retires the
// nodes of the restored state that are gone (Result.Retired, .Renamed).
func Restore(ctx context.Context, s Servers, dir string, o RestoreOptions) (*Result, error) {
	say := progress(o.Progress)
	m, err := Load(dir)
	if err != nil {
		return nil, err
	}
	if err := mayRestore(ctx, s); err != nil {
		return nil, err
	}
	say("==> restoring Consul's snapshot (index %d, taken %s from %s) to %s", m.Consul.Index, m.Created.Format(time.RFC3339), m.Consul.Address, s.ConsulAddr)
	if err := restoreFrom(filepath.Join(dir, ConsulFile), func(r io.Reader) error {
		return s.Consul.Snapshot().Restore((&consul.WriteOptions{}).WithContext(ctx), r)
	}); err != nil {
		return nil, fmt.Errorf("restore Consul's snapshot to %s: %w (nothing was changed in Nomad)", s.ConsulAddr, err)
	}
	say("==> restoring Nomad's snapshot (index %d) to %s", m.Nomad.Index, s.NomadAddr)
	if err := restoreFrom(filepath.Join(dir, NomadFile), func(r io.Reader) error {
		_, err := s.Nomad.Operator().SnapshotRestore(r, (&nomad.WriteOptions{}).WithContext(ctx))
		return err
	}); err != nil {
		return nil, fmt.Errorf("restore Nomad's snapshot to %s: %w (Consul's half WAS restored: run the restore again)", s.NomadAddr, err)
	}
	res := &Result{Manifest: m}
	check := s
	if o.After != nil {
		if check, err = o.After(); err != nil {
			return res, err
		}
	}
	if err := waitRestored(ctx, check, m, o); err != nil {
		return res, err
	}
	if res.Renamed, err = retireRenamed(ctx, check.Consul, say); err != nil {
		return res, err
	}
	res.Retired, err = retireUnreachable(ctx, check, say)
	return res, err
}

// retireUnreachable purges each client node of the restored state that
// no server has a connection to: the machines of the backed-up cluster,
// gone. Nomad gives every node of a restored state its failover grace
// (5 minutes) before it calls one down, and until then places allocations
// there; and a replacement of an allocation on such a node waits for it
// to stop, which it never reports (a rollback right after a restore onto
// new machines failed its deployment so, and a drain did not help). A
// purged node's allocations are lost, and Nomad places them again.
func retireUnreachable(ctx context.Context, s Servers, say func(string, ...any)) ([]string, error) {
	nodes, _, err := s.Nomad.Nodes().List((&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list Nomad's nodes after the restore: %w", err)
	}
	var retired []string
	for _, n := range nodes {
		if n.Status == "down" || reachable(ctx, s.Nomad, n.ID) {
			continue
		}
		if _, _, err := s.Nomad.Nodes().Purge(n.ID, (&nomad.QueryOptions{}).WithContext(ctx)); err != nil {
			return retired, fmt.Errorf("purge node %s (%s), which no server reaches: %w", n.Name, n.ID, err)
		}
		say("    purged Nomad node %s (%s) of the backup: no server reaches it; its allocations are placed again", n.Name, shortID(n.ID))
		retired = append(retired, n.ID)
	}
	return retired, nil
}

// retireRenamed replaces, in Consul's restored catalog, each node whose
// name a running agent now has under another node ID (a machine rebuilt
// with the old one's name): until then Consul refuses that agent's own
// registration ("Node name ... is reserved"), so none of the services on
// it reach the catalog, and the catalog keeps the old machine's instances
// as passing. The old node goes with its services; the agent's node is
// registered with its serfHealth check, as Consul's leader registers a
// live member (it would only on its next reconcile, a minute later, and
// until then no session, so no deploy lock, can be made on that node).
func retireRenamed(ctx context.Context, cc *consul.Client, say func(string, ...any)) ([]string, error) {
	members, err := cc.Agent().Members(false)
	if err != nil {
		return nil, fmt.Errorf("consul's members after the restore: %w", err)
	}
	live := map[string]*consul.AgentMember{}
	for _, m := range members {
		live[m.Name] = m
	}
	nodes, _, err := cc.Catalog().Nodes((&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul's nodes after the restore: %w", err)
	}
	var retired []string
	for _, n := range nodes {
		m, ok := live[n.Node]
		if !ok || m.Tags["id"] == "" || strings.EqualFold(m.Tags["id"], n.ID) {
			continue
		}
		id := m.Tags["id"]
		w := (&consul.WriteOptions{}).WithContext(ctx)
		if _, err := cc.Catalog().Deregister(&consul.CatalogDeregistration{Node: n.Node, Datacenter: n.Datacenter}, w); err != nil {
			return retired, fmt.Errorf("deregister Consul node %s (%s), whose name agent %s now has: %w", n.Node, n.ID, id, err)
		}
		if _, err := cc.Catalog().Register(&consul.CatalogRegistration{
			ID: id, Node: n.Node, Address: m.Addr, Datacenter: n.Datacenter,
			Check: &consul.AgentCheck{Node: n.Node, CheckID: "serfHealth", Name: "Serf Health Status",
				Status: consul.HealthPassing, Output: "Agent alive and reachable"},
		}, w); err != nil {
			return retired, fmt.Errorf("register Consul node %s as agent %s: %w", n.Node, id, err)
		}
		say("    deregistered Consul node %s (%s) of the backup: its name is agent %s's now", n.Node, shortID(n.ID), shortID(id))
		retired = append(retired, n.ID)
	}
	return retired, nil
}

// reachable reports whether a server has a connection to the client node
// id: Nomad answers "No path to node" for one it has none to. A node that
// answers anything else, or does within 3 tries, counts as reachable.
func reachable(ctx context.Context, nc *nomad.Client, id string) bool {
	for try := 0; try < 3; try++ {
		_, err := nc.Nodes().Stats(id, (&nomad.QueryOptions{}).WithContext(ctx))
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "no path to node") {
			return true
		}
		select {
		case <-ctx.Done():
			return true
		case <-time.After(time.Second):
		}
	}
	return false
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// mayRestore checks that both tokens are management tokens (or that ACLs
// are off), which taking and restoring snapshots needs: a refusal of the
// second half after the first was restored would leave half a backup.
func mayRestore(ctx context.Context, s Servers) error {
	tok, _, err := s.Nomad.ACLTokens().Self((&nomad.QueryOptions{}).WithContext(ctx))
	switch {
	case err != nil && strings.Contains(err.Error(), "ACL support disabled"):
	case err != nil:
		return fmt.Errorf("nomad at %s: read NOMAD_TOKEN's token: %w", s.NomadAddr, err)
	case tok.Type != "management":
		return fmt.Errorf("nomad at %s: NOMAD_TOKEN is a %s token (%q); restoring a snapshot needs a management token", s.NomadAddr, tok.Type, tok.Name)
	}
	ct, _, err := s.Consul.ACL().TokenReadSelf((&consul.QueryOptions{}).WithContext(ctx))
	switch {
	case err != nil && strings.Contains(err.Error(), "ACL support disabled"):
	case err != nil:
		return fmt.Errorf("consul at %s: read CONSUL_HTTP_TOKEN's token: %w", s.ConsulAddr, err)
	case !slices.ContainsFunc(ct.Policies, func(p *consul.ACLTokenPolicyLink) bool { return p.ID == globalManagement }):
		return fmt.Errorf("consul at %s: CONSUL_HTTP_TOKEN (%q) lacks global-management; restoring a snapshot needs it", s.ConsulAddr, ct.Description)
	}
	return nil
}

func restoreFrom(path string, restore func(io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return restore(f)
}

// waitRestored polls until the restored jobs have the manifest's versions
// and tags and Consul has their config snapshots, saying every 5 s what
// it still waits for.
func waitRestored(ctx context.Context, s Servers, m *Manifest, o RestoreOptions) error {
	say := progress(o.Progress)
	wait := o.Wait
	if wait == 0 {
		wait = 2 * time.Minute
	}
	start := time.Now()
	deadline := start.Add(wait)
	said := time.Time{}
	for {
		missing, err := stillMissing(ctx, s, m)
		if err == nil && missing == "" {
			say("    every environment's versions and config snapshots read back after %.1fs", time.Since(start).Seconds())
			return nil
		}
		if err != nil && denied(err) {
			return fmt.Errorf("both halves were restored, but the restored servers refuse the token that checks them: "+
				"the restored ACLs are the backup's, so use the backed-up cluster's tokens (kept beside the backup): %w", err)
		}
		why := missing
		if err != nil {
			why = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("both halves were restored, but after %s %s", wait, why)
		}
		if time.Since(said) >= 5*time.Second {
			say("    waiting for the restored state to read back (%.0fs): %s", time.Since(start).Seconds(), why)
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("both halves were restored; stopped waiting for them to read back: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// stillMissing returns what of the manifest the servers do not show yet,
// or "" when they show all of it.
func stillMissing(ctx context.Context, s Servers, m *Manifest) (string, error) {
	var targets []Target
	for _, e := range m.Environments {
		targets = append(targets, Target{e.Name, e.Namespace, e.Job})
	}
	got, err := readEnvironments(ctx, s.Nomad, targets)
	if err != nil {
		return "", err
	}
	for i, want := range m.Environments {
		if !sameEnvironments([]Environment{want}, got[i:i+1]) {
			return fmt.Sprintf("job %s has %d versions up to %d, the backup %d up to %d",
				want.Job, len(got[i].Versions), got[i].Current, len(want.Versions), want.Current), nil
		}
		for _, v := range want.Versions {
			if !v.ConfigSaved {
				continue
			}
			keys, _, err := s.Consul.KV().Keys(v.ConfigPath+"/", "", (&consul.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return "", fmt.Errorf("consul: config snapshot of %s version %d: %w", want.Job, v.Version, err)
			}
			if len(keys) == 0 {
				return fmt.Sprintf("the config snapshot %s of %s version %d is not in Consul", v.ConfigPath, want.Job, v.Version), nil
			}
		}
	}
	return "", nil
}

// denied reports whether err is a server refusing the token (403).
func denied(err error) bool {
	var uerr nomad.UnexpectedResponseError
	if errors.As(err, &uerr) && uerr.StatusCode() == http.StatusForbidden {
		return true
	}
	var cerr consul.StatusError
	return errors.As(err, &cerr) && cerr.Code == http.StatusForbidden
}
