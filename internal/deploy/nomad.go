package deploy

import (
	"errors"
	"io"
	"net/http"
	"strings"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
)

// Jobs is the part of Nomad's jobs API that the deployer calls; *nomad.Jobs
// is one. Keeping it this narrow shows what the deployer asks of Nomad, and
// lets tests stand in for a server where a real one cannot show a case.
type Jobs interface {
	ParseHCLOpts(req *nomad.JobsParseRequest) (*nomad.Job, error)
	Info(jobID string, q *nomad.QueryOptions) (*nomad.Job, *nomad.QueryMeta, error)
	Plan(job *nomad.Job, diff bool, q *nomad.WriteOptions) (*nomad.JobPlanResponse, *nomad.WriteMeta, error)
	RegisterOpts(job *nomad.Job, opts *nomad.RegisterOptions, q *nomad.WriteOptions) (*nomad.JobRegisterResponse, *nomad.WriteMeta, error)
	Versions(jobID string, diffs bool, q *nomad.QueryOptions) ([]*nomad.Job, []*nomad.JobDiff, *nomad.QueryMeta, error)
	Submission(jobID string, version int, q *nomad.QueryOptions) (*nomad.JobSubmission, *nomad.QueryMeta, error)
	TagVersion(jobID string, version uint64, name, description string, q *nomad.WriteOptions) (*nomad.WriteMeta, error)
	UntagVersion(jobID, name string, q *nomad.WriteOptions) (*nomad.WriteMeta, error)
	Revert(jobID string, version uint64, enforcePriorVersion *uint64, q *nomad.WriteOptions, consulToken, vaultToken string) (*nomad.JobRegisterResponse, *nomad.WriteMeta, error)
	Deployments(jobID string, all bool, q *nomad.QueryOptions) ([]*nomad.Deployment, *nomad.QueryMeta, error)
	LatestDeployment(jobID string, q *nomad.QueryOptions) (*nomad.Deployment, *nomad.QueryMeta, error)
	Allocations(jobID string, allAllocs bool, q *nomad.QueryOptions) ([]*nomad.AllocationListStub, *nomad.QueryMeta, error)
	Evaluations(jobID string, q *nomad.QueryOptions) ([]*nomad.Evaluation, *nomad.QueryMeta, error)
}

// Evaluations reads one evaluation; *nomad.Evaluations is one.
type Evaluations interface {
	Info(evalID string, q *nomad.QueryOptions) (*nomad.Evaluation, *nomad.QueryMeta, error)
}

// Deployments reads a deployment and its allocations, and gives the
// verdicts a deployment can wait for (promote, fail); *nomad.Deployments is
// one.
type Deployments interface {
	Info(deploymentID string, q *nomad.QueryOptions) (*nomad.Deployment, *nomad.QueryMeta, error)
	Allocations(deploymentID string, q *nomad.QueryOptions) ([]*nomad.AllocationListStub, *nomad.QueryMeta, error)
	PromoteAll(deploymentID string, q *nomad.WriteOptions) (*nomad.DeploymentUpdateResponse, *nomad.WriteMeta, error)
	Fail(deploymentID string, q *nomad.WriteOptions) (*nomad.DeploymentUpdateResponse, *nomad.WriteMeta, error)
}

// Instances lists a service's instances; *consul.Health is one.
type Instances interface {
	Service(service, tag string, passingOnly bool, q *consul.QueryOptions) ([]*consul.ServiceEntry, *consul.QueryMeta, error)
}

// New returns a Deployer that works through the real Nomad and Consul
// clients, keeping its config snapshots in store.
func New(nc *nomad.Client, cc *consul.Client, store *configstore.Store, jobSpec string, progress io.Writer) *Deployer {
	return &Deployer{
		Jobs: aclJobs{nc.Jobs(), nomadACL{nc}}, Evals: aclEvals{nc.Evaluations(), nomadACL{nc}},
		Deploys: aclDeploys{nc.Deployments(), nomadACL{nc}}, Logs: nomadLogs{nc},
		NomadAddr: nc.Address(), Instances: cc.Health(), Store: store,
		JobSpec: jobSpec, Progress: progress,
	}
}

// isConflict reports whether Nomad refused a write because the job changed
// underneath it, so the caller's view is stale and nothing was written. Nomad
// says so in text only (nomad/job_endpoint.go): a register with EnforceIndex
// answers "Enforcing job modify index N: job exists with conflicting job
// modify index: M", a revert with EnforcePriorVersion "current job has
// version N; enforcing version M". The table test holds a real server's
// answers.
func isConflict(err error) bool {
	var uerr nomad.UnexpectedResponseError
	if !errors.As(err, &uerr) || uerr.StatusCode() != http.StatusInternalServerError {
		return false
	}
	body := uerr.Body()
	return strings.Contains(body, "Enforcing job modify index") || strings.Contains(body, "; enforcing version")
}
