package deploy

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/configstore"
)

// Policy files the deployer's tokens are made from; a refusal names the one
// to change.
const (
	NomadPolicyFile  = "deployer/policies/nomad.hcl"
	ConsulPolicyFile = "deployer/policies/consul.hcl"
)

// DeniedError is Nomad or Consul refusing the deployer's token: a
// capability its policy lacks, or a token the server does not know.
type DeniedError struct {
	System     string // "Nomad" or "Consul"
	Capability string // submit-job; key:write on "counter/..."; "" for an unknown token
	Namespace  string // Nomad's namespace
	Doing      string // what the deployer asked for
	Err        error
}

func (e *DeniedError) Error() string {
	env, file := "NOMAD_TOKEN", NomadPolicyFile
	if e.System == "Consul" {
		env, file = "CONSUL_HTTP_TOKEN", ConsulPolicyFile
	}
	if e.Capability == "" {
		return fmt.Sprintf("%s does not know this token (%s) while the deployer tried to %s: it is unset, wrong, expired or revoked", e.System, env, e.Doing)
	}
	where := ""
	if e.Namespace != "" {
		where = fmt.Sprintf(" in namespace %q", e.Namespace)
	}
	return fmt.Sprintf("%s denied %s%s to this token (%s) while the deployer tried to %s: add it to the deployer's %s policy (%s)",
		e.System, e.Capability, where, env, e.Doing, e.System, file)
}

func (e *DeniedError) Unwrap() error { return e.Err }

// nomadACL explains Nomad's refusals.
type nomadACL struct{ c *nomad.Client }

// denied turns Nomad's 403 into a DeniedError naming the capability the
// call needs. Nomad answers "Permission denied" both to a token that lacks
// it and to one it does not know; a token can always read itself, so that
// read tells the two apart.
func (a nomadACL) denied(err error, capability, namespace, doing string) error {
	var uerr nomad.UnexpectedResponseError
	if err == nil || !errors.As(err, &uerr) || uerr.StatusCode() != http.StatusForbidden {
		return err
	}
	if namespace == "" {
		namespace = "default"
	}
	if strings.Contains(uerr.Body(), "ACL token not found") {
		capability = ""
	} else if a.c != nil {
		if _, _, serr := a.c.ACLTokens().Self(nil); serr != nil {
			capability = ""
		}
	}
	return &DeniedError{System: "Nomad", Capability: capability, Namespace: namespace, Doing: doing, Err: err}
}

// consulLacks is how Consul names what a token lacks: "Permission denied:
// token with AccessorID '...' lacks permission 'key:write' on "a/b"".
var consulLacks = regexp.MustCompile(`lacks permission '([^']+)' on "([^"]*)"`)

// Denied returns the DeniedError in err's chain, or, when Consul refused the
// token somewhere in it (Consul names the permission in its answer), a new
// one; otherwise err as it is.
func Denied(err error) error {
	var d *DeniedError
	if err == nil || errors.As(err, &d) {
		return err
	}
	doing := "reach Consul"
	var op *configstore.ConsulError
	if errors.As(err, &op) {
		doing = op.Doing
		if op.Capability != "" {
			return &DeniedError{System: "Consul", Capability: op.Capability, Doing: doing, Err: err}
		}
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "ACL not found"):
		return &DeniedError{System: "Consul", Doing: doing, Err: err}
	case strings.Contains(msg, "Permission denied"):
		if m := consulLacks.FindStringSubmatch(msg); m != nil {
			return &DeniedError{System: "Consul", Capability: fmt.Sprintf("%s on %q", m[1], m[2]), Doing: doing, Err: err}
		}
	}
	return err
}

// aclJobs is Jobs whose refusals say which capability was missing: Nomad
// answers only "Permission denied".
type aclJobs struct {
	Jobs
	acl nomadACL
}

func wns(q *nomad.WriteOptions) string {
	if q == nil {
		return ""
	}
	return q.Namespace
}

func qns(q *nomad.QueryOptions) string {
	if q == nil {
		return ""
	}
	return q.Namespace
}

func (j aclJobs) ParseHCLOpts(req *nomad.JobsParseRequest) (*nomad.Job, error) {
	job, err := j.Jobs.ParseHCLOpts(req)
	// parse-job or submit-job allows it; the deployer's policy has the
	// second, which it needs anyway.
	return job, j.acl.denied(err, "submit-job", "", "render the job spec")
}

func (j aclJobs) Info(id string, q *nomad.QueryOptions) (*nomad.Job, *nomad.QueryMeta, error) {
	job, m, err := j.Jobs.Info(id, q)
	return job, m, j.acl.denied(err, "read-job", qns(q), "read job "+id)
}

func (j aclJobs) Plan(job *nomad.Job, diff bool, q *nomad.WriteOptions) (*nomad.JobPlanResponse, *nomad.WriteMeta, error) {
	r, m, err := j.Jobs.Plan(job, diff, q)
	return r, m, j.acl.denied(err, "submit-job", wns(q), "plan job "+*job.ID)
}

func (j aclJobs) RegisterOpts(job *nomad.Job, opts *nomad.RegisterOptions, q *nomad.WriteOptions) (*nomad.JobRegisterResponse, *nomad.WriteMeta, error) {
	r, m, err := j.Jobs.RegisterOpts(job, opts, q)
	return r, m, j.acl.denied(err, "submit-job", wns(q), "register job "+*job.ID)
}

func (j aclJobs) Versions(id string, diffs bool, q *nomad.QueryOptions) ([]*nomad.Job, []*nomad.JobDiff, *nomad.QueryMeta, error) {
	vs, ds, m, err := j.Jobs.Versions(id, diffs, q)
	return vs, ds, m, j.acl.denied(err, "read-job", qns(q), "read the versions of job "+id)
}

func (j aclJobs) Submission(id string, version int, q *nomad.QueryOptions) (*nomad.JobSubmission, *nomad.QueryMeta, error) {
	s, m, err := j.Jobs.Submission(id, version, q)
	return s, m, j.acl.denied(err, "read-job", qns(q), fmt.Sprintf("read the submission of job %s version %d", id, version))
}

func (j aclJobs) TagVersion(id string, version uint64, name, desc string, q *nomad.WriteOptions) (*nomad.WriteMeta, error) {
	m, err := j.Jobs.TagVersion(id, version, name, desc, q)
	return m, j.acl.denied(err, "submit-job", wns(q), fmt.Sprintf("tag version %d of job %s", version, id))
}

func (j aclJobs) UntagVersion(id, name string, q *nomad.WriteOptions) (*nomad.WriteMeta, error) {
	m, err := j.Jobs.UntagVersion(id, name, q)
	return m, j.acl.denied(err, "submit-job", wns(q), fmt.Sprintf("untag %s of job %s", name, id))
}

func (j aclJobs) Revert(id string, version uint64, prior *uint64, q *nomad.WriteOptions, consulToken, vaultToken string) (*nomad.JobRegisterResponse, *nomad.WriteMeta, error) {
	r, m, err := j.Jobs.Revert(id, version, prior, q, consulToken, vaultToken)
	return r, m, j.acl.denied(err, "submit-job", wns(q), fmt.Sprintf("revert job %s to version %d", id, version))
}

func (j aclJobs) Deployments(id string, all bool, q *nomad.QueryOptions) ([]*nomad.Deployment, *nomad.QueryMeta, error) {
	ds, m, err := j.Jobs.Deployments(id, all, q)
	return ds, m, j.acl.denied(err, "read-job", qns(q), "read the deployments of job "+id)
}

func (j aclJobs) LatestDeployment(id string, q *nomad.QueryOptions) (*nomad.Deployment, *nomad.QueryMeta, error) {
	d, m, err := j.Jobs.LatestDeployment(id, q)
	return d, m, j.acl.denied(err, "read-job", qns(q), "read the latest deployment of job "+id)
}

func (j aclJobs) Allocations(id string, all bool, q *nomad.QueryOptions) ([]*nomad.AllocationListStub, *nomad.QueryMeta, error) {
	as, m, err := j.Jobs.Allocations(id, all, q)
	return as, m, j.acl.denied(err, "read-job", qns(q), "read the allocations of job "+id)
}

func (j aclJobs) Evaluations(id string, q *nomad.QueryOptions) ([]*nomad.Evaluation, *nomad.QueryMeta, error) {
	es, m, err := j.Jobs.Evaluations(id, q)
	return es, m, j.acl.denied(err, "read-job", qns(q), "read the evaluations of job "+id)
}

type aclEvals struct {
	Evaluations
	acl nomadACL
}

func (e aclEvals) Info(id string, q *nomad.QueryOptions) (*nomad.Evaluation, *nomad.QueryMeta, error) {
	ev, m, err := e.Evaluations.Info(id, q)
	return ev, m, e.acl.denied(err, "read-job", qns(q), "read evaluation "+short(id))
}

type aclDeploys struct {
	Deployments
	acl nomadACL
}

func (d aclDeploys) Info(id string, q *nomad.QueryOptions) (*nomad.Deployment, *nomad.QueryMeta, error) {
	dep, m, err := d.Deployments.Info(id, q)
	return dep, m, d.acl.denied(err, "read-job", qns(q), "read deployment "+short(id))
}

func (d aclDeploys) Allocations(id string, q *nomad.QueryOptions) ([]*nomad.AllocationListStub, *nomad.QueryMeta, error) {
	as, m, err := d.Deployments.Allocations(id, q)
	return as, m, d.acl.denied(err, "read-job", qns(q), "read the allocations of deployment "+short(id))
}

func (d aclDeploys) PromoteAll(id string, q *nomad.WriteOptions) (*nomad.DeploymentUpdateResponse, *nomad.WriteMeta, error) {
	r, m, err := d.Deployments.PromoteAll(id, q)
	return r, m, d.acl.denied(err, "submit-job", wns(q), "promote deployment "+short(id))
}

func (d aclDeploys) Fail(id string, q *nomad.WriteOptions) (*nomad.DeploymentUpdateResponse, *nomad.WriteMeta, error) {
	r, m, err := d.Deployments.Fail(id, q)
	return r, m, d.acl.denied(err, "submit-job", wns(q), "fail deployment "+short(id))
}
