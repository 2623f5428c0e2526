package main

import (
	"context"
	"flag"
	"fmt"
)

func analyzeCommand() *command {
	return &command{
		name:     "analyze",
		args:     "-env NAME [options]",
		synopsis: "Judge the canary that waits for its analysis, and promote or fail it",
		doc: `For an environment with an analysis block: judges the canaries of its
deployment that wait for promotion by what they served since they turned
healthy, against the stable instances, as submit's watch does
(docs/analysis.md), then promotes or fails the deployment and watches it
to its end. A deployer killed while it judged leaves the deployment
waiting (Nomad never fails it by its progress deadline; status says
"canary awaiting analysis since ..."): this resumes the judging over the
same window. Holds the job's deploy lock meanwhile; the killed deployer's
lock lasts until Consul ends its session (at most 20 s), which -wait waits
out. Reads Prometheus at -prometheus-addr or PROMETHEUS_ADDR.`,
		required: []string{"env"},
		exits: append([]exitDoc{{exitOK, "the canary passed and the deployment succeeded"}},
			codes(exitError, exitUsage, exitFailed, exitAutoReverted, exitConflict, exitUnknown)...),
		flags: func(fs *flag.FlagSet, sh *shell) func(context.Context, []string) error {
			var f envFlags
			f.register(fs)
			var p prometheusFlag
			p.register(fs)
			wait := fs.Duration("wait", 0, fmt.Sprintf("wait up to `DURATION` for the deploy lock that another deployer holds (one killed mid-analysis, until Consul ends its session), instead of a conflict (exit %d)", exitConflict))
			return func(ctx context.Context, _ []string) error {
				d, e, closeClients, err := f.open(sh)
				if err != nil {
					return err
				}
				defer closeClients()
				if err := p.judgeWith(sh, d, e); err != nil {
					return err
				}
				rec, err := d.Analyze(ctx, e, submitter(ctx, sh.getenv), *wait)
				return finishRecord(sh, rec, err, f.json)
			}
		},
	}
}
