# A person's Nomad policy for the Nomad UI and CLI: read everything of the
# jobs, and revert them ("Revert Version" in the UI, nomad job revert).
#
#   nomad acl policy apply -description "counter operator" counter-operator deployer/policies/nomad-operator.hcl
#   nomad acl token create -name "$USER" -policy counter-operator
namespace "default" {
  policy       = "read"
  capabilities = ["submit-job", "read-logs"]
}

node {
  policy = "read"
}
