package main

import (
	"context"
	"fmt"
	"io"

	"github.com/kodekloud/counter/internal/backup"
	"github.com/kodekloud/counter/internal/localstack"
)

// running loads the stack recorded in dir and checks that it answers.
func running(ctx context.Context, dir string) (*localstack.Stack, error) {
	s, err := localstack.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("no stack recorded in %s (run make up): %w", dir, err)
	}
	if err := s.Healthy(ctx); err != nil {
		return nil, fmt.Errorf("the stack in %s is not up (make up): %w", dir, err)
	}
	return s, nil
}

// stackBackup saves the running stack's snapshots and tokens into out.
func stackBackup(ctx context.Context, dir, out, envDir string, stdout, stderr io.Writer) error {
	if out == "" {
		return usageError{"backup: -out DIR is required"}
	}
	s, err := running(ctx, dir)
	if err != nil {
		return err
	}
	m, err := s.Backup(ctx, out, backup.Targets(envDir, stderr), stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup %s: Nomad at index %d, Consul at index %d, %d token files of %s kept beside them\n",
		out, m.Nomad.Index, m.Consul.Index, len(m.Kept), s.Dir)
	summary(stdout, m)
	return nil
}

// stackRestore restores the backup in from onto the running stack, which
// takes the backup's tokens (make restore then starts it again).
func stackRestore(ctx context.Context, dir, from string, stdout, stderr io.Writer) error {
	if from == "" {
		return usageError{"restore: -from DIR is required"}
	}
	s, err := running(ctx, dir)
	if err != nil {
		return err
	}
	res, err := s.Restore(ctx, from, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s (taken %s)\n", from, res.Created.Format("2006-01-02 15:04:05 MST"))
	summary(stdout, res.Manifest)
	return nil
}

func summary(w io.Writer, m *backup.Manifest) {
	for _, line := range m.Summary() {
		fmt.Fprintf(w, "  %s\n", line)
	}
}
