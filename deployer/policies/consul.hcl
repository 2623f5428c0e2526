# The deployer's Consul policy: the release snapshots and the deploy lock
# under the release prefix (-prefix, default counter/releases), the session
# that holds the lock, and the passing instances it reports. Nothing else:
# the tasks read their snapshots with tokens of their own (see the README,
# "Running against a secured cluster").
#
#   consul acl policy create -name counter-deployer -rules @deployer/policies/consul.hcl
#   consul acl token create -description deployer -policy-name counter-deployer
key_prefix "counter/releases/" {
  policy = "write"
}

session_prefix "" {
  policy = "write"
}

service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}
