package main

import (
	"context"
	"io"
)

type comparison struct {
	What       string  `json:"what"`
	DeployerMS float64 `json:"deployer_ms"`
	BaselineMS float64 `json:"nomad_cli_ms,omitempty"`
	CPUMS      float64 `json:"deployer_cpu_ms"`
	RSSMiB     float64 `json:"deployer_peak_rss_mib"`
}

type deployerReport struct {
	Rounds      int          `json:"rounds"`
	Comparisons []comparison `json:"comparisons"`
}

func benchDeployer(ctx context.Context, root, work string, versions, rounds int, progress io.Writer) (*deployerReport, error) {
	return &deployerReport{Rounds: rounds}, nil
}
