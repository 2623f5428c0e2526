# The deployer's Nomad policy: what render, plan, submit, history, rollback,
# status and gc need, and nothing more. Give the deployer a client token with
# this policy, never a management token:
#
#   nomad acl policy apply -description "counter deployer" counter-deployer deployer/policies/nomad.hcl
#   nomad acl token create -name deployer -policy counter-deployer
#
# One namespace block per namespace the environments name (environments/*.hcl,
# "namespace"; default "default").
namespace "default" {
  capabilities = [
    "read-job",   # the job, its versions, submissions, deployments and allocations
    "submit-job", # render the job spec with the server's HCL2 parser, plan, register, revert, tag versions
    "read-logs",  # the last lines of a failing task's stderr
  ]
}
