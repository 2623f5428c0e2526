package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/kodekloud/counter/internal/backup"
	"github.com/kodekloud/counter/internal/environment"
)

func backupCommand() *command {
	return &command{
		name:     "backup",
		args:     "-out DIR [options]",
		synopsis: "Save Nomad's and Consul's snapshots together: every release, both halves",
		doc: `Saves a backup of the cluster into the new folder DIR: Nomad's snapshot
(nomad.snap: the job versions, ACLs, keyring) and Consul's (consul.snap: the
config snapshots, ACLs), taken in that order, and manifest.json: when, from
which servers, each file's size and SHA-256, and each environment's job
versions and tags. The folder is written whole or not at all (a temporary
folder beside it, synced, then renamed), and an existing one is never
overwritten. Needs management tokens in NOMAD_TOKEN and CONSUL_HTTP_TOKEN.
Keep the management tokens (and the KMS key, if Nomad's keyring uses one)
beside the backup: the restored ACLs are the backup's.`,
		required: []string{"out"},
		exits:    codes(exitOK, exitError, exitUsage),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			out := fs.String("out", "", "new folder `DIR` to write the backup into")
			dir := fs.String("environments", environment.DefaultDir, "folder `DIR` of environment files whose jobs the manifest lists")
			asJSON := fs.Bool("json", false, "print the manifest as JSON")
			return func(ctx context.Context, _ []string) error {
				targets := backup.Targets(*dir, sh.stderr)
				s, closeClients, err := backupServers(sh)
				if err != nil {
					return err
				}
				defer closeClients()
				m, err := backup.Save(ctx, s, *out, backup.Options{Environments: targets, Progress: sh.stderr})
				if err != nil {
					return err
				}
				if *asJSON {
					return writeJSON(sh.stdout, m)
				}
				printManifest(sh.stdout, "backup "+*out, m)
				return nil
			}
		},
	}
}

// backupServers connects to Nomad and Consul as every command does.
func backupServers(sh *shell) (backup.Servers, func(), error) {
	nc, cc, closeClients, err := clients(sh.getenv)
	if err != nil {
		return backup.Servers{}, nil, err
	}
	consulAddr := sh.getenv("CONSUL_HTTP_ADDR")
	if consulAddr == "" {
		consulAddr = "127.0.0.1:8500"
	}
	return backup.Servers{Nomad: nc, Consul: cc, NomadAddr: nc.Address(), ConsulAddr: consulAddr}, closeClients, nil
}

// printManifest says what a backup holds, as backup and restore report it.
func printManifest(w io.Writer, what string, m *backup.Manifest) {
	fmt.Fprintf(w, "%s: taken %s; Nomad %s (region %s) at index %d, Consul %s (datacenter %s) at index %d\n",
		what, m.Created.Format("2006-01-02 15:04:05 MST"), m.Nomad.Address, m.Nomad.Region, m.Nomad.Index,
		m.Consul.Address, m.Consul.DC, m.Consul.Index)
	for _, line := range m.Summary() {
		fmt.Fprintf(w, "  %s\n", line)
	}
}
