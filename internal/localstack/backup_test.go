package localstack_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/backup"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

// TestRestoreOntoAFreshStackTakesTheBackupsTokens is make backup, make
// clean, make up, make restore (which is restore, make down, make up): a
// fresh stack bootstraps tokens of its own, which the restored ACLs do not
// know, so the stack must take the backup's, and its agents run with them
// once started again. Then the old deployer token works, bin/stack env
// hands it out, the job's versions and its config key are back, and the
// fresh Consul agent's node is in the catalog (issue 22).
func TestRestoreOntoAFreshStackTakesTheBackupsTokens(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	old := stacktest.StartOwn(t)
	nomadRules, consulRules := stacktest.DeployerPolicies(t)
	if err := old.DeployerTokens(ctx, nomadRules, consulRules); err != nil {
		t.Fatal(err)
	}
	stacktest.Secret(t, old, "old stack's deployer Nomad token", old.DeployerNomadToken)
	stacktest.Secret(t, old, "old stack's deployer Consul token", old.DeployerConsulToken)

	// Both halves of a release, in their simplest form: a job with two
	// versions, whose meta names a config key in Consul.
	job := stacktest.Name(t, "backup")
	path := "counter/releases/default/" + job + "/abc"
	nc, cc := stacktest.Clients(t, old)
	if _, err := cc.KV().Put(&consul.KVPair{Key: path + "/HOST", Value: []byte("redis_db")}, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1} {
		if _, _, err := nc.Jobs().Register(idleJob(job, path, n), nil); err != nil {
			t.Fatal(err)
		}
	}
	oldKeys := publicKeyIDs(t, old.NomadAddr)
	out := filepath.Join(t.TempDir(), "backup")
	m, err := old.Backup(ctx, out, []backup.Target{{Name: "dev", Namespace: "default", Job: job}}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, k := range m.Kept {
		kept = append(kept, k.Name)
	}
	nf, cf := localstack.TokenFiles(old.Dir)
	for _, want := range []string{filepath.Base(nf), filepath.Base(cf), "deployer-nomad-token", "deployer-consul-token", "consul-prometheus-token"} {
		if !slices.Contains(kept, want) {
			t.Errorf("the backup kept %v, not %s", kept, want)
		}
	}

	// make clean, make up: a stack with tokens of its own.
	if err := old.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := stacktest.StartOwn(t)
	// Its keyring is its own, so keys equal to the old ones after the
	// restore can only have come from the snapshot.
	if keys := publicKeyIDs(t, fresh.NomadAddr); slices.Equal(keys, oldKeys) {
		t.Fatalf("a fresh stack serves the old stack's keys %v before any restore", keys)
	}
	if _, err := fresh.Restore(ctx, out, os.Stderr); err != nil {
		t.Fatal(err)
	}
	// make down, make up: the agents start with the backup's tokens.
	if err := fresh.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := localstack.Start(ctx, localstack.Config{Dir: fresh.Dir, Bin: stacktest.Binaries(t), Ports: fresh.Ports, Resume: true})
	if err != nil {
		t.Fatalf("the stack did not start again after the restore: %v", err)
	}
	t.Cleanup(func() { _ = again.Stop(context.Background()) })
	if again.NomadToken != old.NomadToken || again.ConsulToken != old.ConsulToken || again.DeployerNomadToken != old.DeployerNomadToken {
		t.Error("after the restore the stack's tokens are not the backup's")
	}
	if env := strings.Join(again.Env(), "\n"); !strings.Contains(env, "NOMAD_TOKEN="+old.DeployerNomadToken) {
		t.Error("bin/stack env does not hand out the backup's deployer token")
	}
	// Prometheus asks Consul with the backup's token, which the restored
	// ACLs know.
	if again.PrometheusToken() != old.PrometheusToken() {
		t.Error("after the restore Prometheus's token is not the backup's")
	}
	pc, err := consul.NewClient(&consul.Config{Address: again.ConsulAddr, Token: again.PrometheusToken()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pc.Catalog().Services(nil); err != nil {
		t.Errorf("Prometheus's token after the restore: %v", err)
	}

	// Nomad's keyring came back in its snapshot: the restored Nomad signs
	// workload identities with the old stack's keys, whose public halves
	// it serves for Consul to check them.
	if newKeys := publicKeyIDs(t, again.NomadAddr); !slices.Equal(newKeys, oldKeys) {
		t.Errorf("after the restore Nomad serves the keys %v, want the old stack's %v", newKeys, oldKeys)
	}

	// The old deployer's tokens work, and read both halves.
	dn, err := nomad.NewClient(&nomad.Config{Address: again.NomadAddr, SecretID: old.DeployerNomadToken})
	if err != nil {
		t.Fatal(err)
	}
	if vs, _, _, err := dn.Jobs().Versions(job, false, nil); err != nil || len(vs) != 2 {
		t.Errorf("versions of %s with the old deployer token: %d, %v; want 2", job, len(vs), err)
	}
	dc, err := consul.NewClient(&consul.Config{Address: again.ConsulAddr, Token: old.DeployerConsulToken})
	if err != nil {
		t.Fatal(err)
	}
	if kv, _, err := dc.KV().Get(path+"/HOST", nil); err != nil || kv == nil || string(kv.Value) != "redis_db" {
		t.Errorf("%s/HOST with the old deployer token: %v, %v; want redis_db", path, kv, err)
	}

	// The fresh Consul agent, now with the backup's token, is in the
	// catalog as itself: a deploy lock's session can be made on it.
	_, mc := stacktest.Clients(t, again)
	deadline := time.Now().Add(time.Minute)
	for {
		id, _, err := mc.Session().Create(&consul.SessionEntry{TTL: "10s", Behavior: "delete"}, nil)
		if err == nil {
			_, _ = mc.Session().Destroy(id, nil)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Consul session after the restore: %v", err)
		}
		time.Sleep(time.Second)
	}
}

// publicKeyIDs returns the IDs of the keys Nomad at addr signs workload
// identities with, from its JWKS, sorted.
func publicKeyIDs(t *testing.T, addr string) []string {
	t.Helper()
	res, err := http.Get(addr + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var jwks struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(res.Body).Decode(&jwks); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range jwks.Keys {
		ids = append(ids, k.KID)
	}
	slices.Sort(ids)
	if len(ids) == 0 {
		t.Fatalf("Nomad at %s serves no key", addr)
	}
	return ids
}

// idleJob is version n of a service job that asks for no instance, whose
// meta names the config snapshot at path.
func idleJob(id, path string, n int) *nomad.Job {
	zero := 0
	return &nomad.Job{
		ID: &id, Name: &id, Datacenters: []string{"dc1"},
		Meta: map[string]string{"release_config_path": path, "n": string(rune('0' + n))},
		TaskGroups: []*nomad.TaskGroup{{
			Name: nomadString("web"), Count: &zero,
			Tasks: []*nomad.Task{{Name: "app", Driver: "raw_exec", Config: map[string]any{"command": "/bin/true"}}},
		}},
	}
}

func nomadString(s string) *string { return &s }
