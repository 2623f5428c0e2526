package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/kodekloud/counter/internal/backup"
)

func restoreCommand() *command {
	return &command{
		name:     "restore",
		args:     "-from DIR [options]",
		synopsis: "Restore a backup's Nomad and Consul snapshots, and check the releases came back",
		doc: `Restores the backup in DIR (made by deployer backup) onto the cluster:
Consul's snapshot, then Nomad's. Before changing anything it checks the
manifest, each snapshot's size and SHA-256 and its archive's own sums, and
that NOMAD_TOKEN and CONSUL_HTTP_TOKEN are management tokens. Afterwards it
waits (up to -wait, saying on stderr what it waits for) until every
environment's job has the versions and tags the manifest lists and their
config snapshots are in Consul. Then it purges the restored Nomad client
nodes that no server reaches (machines of the backed-up cluster that are
gone, which Nomad would count as ready for minutes) and deregisters the
Consul nodes whose names running agents now have under new IDs, so that
the releases run again at once; and says what it restored. The restored
ACLs are the backup's: restore with the backed-up cluster's management
tokens (bootstrap the fresh cluster with them), or the check is refused.`,
		required: []string{"from"},
		exits:    codes(exitOK, exitError, exitUsage),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			from := fs.String("from", "", "backup folder `DIR`")
			wait := fs.Duration("wait", 2*time.Minute, "wait up to `DURATION` for the restored jobs and snapshots to read back")
			asJSON := fs.Bool("json", false, "print the restored backup's manifest and the nodes retired as JSON")
			return func(ctx context.Context, _ []string) error {
				if *wait <= 0 {
					return usageError("restore: -wait %s: want a positive duration", *wait)
				}
				s, closeClients, err := backupServers(sh)
				if err != nil {
					return err
				}
				defer closeClients()
				res, err := backup.Restore(ctx, s, *from, backup.RestoreOptions{Wait: *wait, Progress: sh.stderr})
				if err != nil {
					return err
				}
				if *asJSON {
					return writeJSON(sh.stdout, res)
				}
				printManifest(sh.stdout, "restored "+*from, res.Manifest)
				for _, id := range res.Retired {
					fmt.Fprintf(sh.stdout, "  purged Nomad node %s of the backup, which no server reaches\n", id)
				}
				for _, id := range res.Renamed {
					fmt.Fprintf(sh.stdout, "  deregistered Consul node %s of the backup, whose name a running agent has\n", id)
				}
				return nil
			}
		},
	}
}
