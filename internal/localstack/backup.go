package localstack

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/backup"
)

// Backup saves the stack's Nomad and Consul snapshots into the new folder
// out (internal/backup), with the stack's secrets (its management,
// deployer and operator tokens) kept beside them: the snapshots bring
// back the ACLs those tokens belong to, and nothing else does.
func (s *Stack) Backup(ctx context.Context, out string, envs []backup.Target, progress io.Writer) (*backup.Manifest, error) {
	var keep map[string][]byte
	if s.ACL {
		var err error
		if keep, err = Secrets(s.Dir); err != nil {
			return nil, err
		}
	}
	nc, cc, err := s.Clients()
	if err != nil {
		return nil, err
	}
	return backup.Save(ctx, s.backupServers(nc, cc), out, backup.Options{Environments: envs, Keep: keep, Progress: progress})
}

// Restore restores the backup in from onto the running stack with the
// stack's management tokens, checks the result with the backup's (the
// restored ACLs know those, and no longer the stack's), and then puts the
// backup's secrets in the stack's folder. The agents still run with the
// tokens they started with, which the restored ACLs do not know: stop the
// stack and start it again (make restore does) and they take the backup's.
func (s *Stack) Restore(ctx context.Context, from string, progress io.Writer) (*backup.Result, error) {
	m, err := backup.Load(from)
	if err != nil {
		return nil, err
	}
	kept := map[string][]byte{}
	for _, k := range m.Kept {
		if kept[k.Name], err = backup.KeptFile(from, k.Name); err != nil {
			return nil, err
		}
	}
	nf, cf := TokenFiles(s.Dir)
	nomadToken := strings.TrimSpace(string(kept[filepath.Base(nf)]))
	consulToken := strings.TrimSpace(string(kept[filepath.Base(cf)]))
	if s.ACL && (nomadToken == "" || consulToken == "") {
		return nil, fmt.Errorf("backup %s keeps no management tokens (made by deployer backup, not make backup?): "+
			"restore it with deployer restore and the tokens kept beside it", from)
	}
	nc, cc, err := s.Clients()
	if err != nil {
		return nil, err
	}
	after := func() (backup.Servers, error) {
		if !s.ACL {
			return s.backupServers(nc, cc), nil
		}
		n, err := nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: nomadToken, HttpClient: s.httpClient()})
		if err != nil {
			return backup.Servers{}, err
		}
		c, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: consulToken, HttpClient: s.httpClient()})
		if err != nil {
			return backup.Servers{}, err
		}
		return s.backupServers(n, c), nil
	}
	res, err := backup.Restore(ctx, s.backupServers(nc, cc), from, backup.RestoreOptions{Progress: progress, After: after})
	if res != nil && s.ACL {
		// Both halves are restored, so the ACLs are the backup's whatever
		// failed after: the stack's tokens must be the backup's too.
		if perr := PutSecrets(s.Dir, kept); perr != nil {
			return res, fmt.Errorf("restored, but the backup's tokens could not be put in %s: %w", s.Dir, perr)
		}
		fmt.Fprintf(progress, "==> the stack's tokens in %s are the backup's now; its agents take them when they start again\n",
			filepath.Join(s.Dir, secretsDir))
	}
	return res, err
}

func (s *Stack) backupServers(nc *nomad.Client, cc *consul.Client) backup.Servers {
	return backup.Servers{Nomad: nc, Consul: cc, NomadAddr: s.NomadAddr, ConsulAddr: s.ConsulAddr}
}
