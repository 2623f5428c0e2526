# Production, as in the seed: Redis at redis_db_prod:6379. Two instances,
# one canary that must be healthy before the rest are replaced.
datacenters = ["dc1"]
count       = 2

# Where users reach prod: the local stack's front door (HAProxy, fed from
# Consul) listens here and sends each request to a passing instance, so the
# URL stays the same across releases, rollbacks and restarts. On a real
# cluster it is the environment's public URL, served by its front door.
url = "http://127.0.0.1:8083/"

config {
  HOST = "redis_db_prod"
  PORT = 6379
}

resources {
  cpu    = 200
  memory = 64
}

# One canary beside the two stable instances, promoted by the deployer's
# analysis below, not by Nomad once healthy; a canary that is failed, or
# never turns healthy, is reverted while the old instances keep serving.
update {
  max_parallel      = 1
  canary            = 1
  auto_revert       = true
  min_healthy_time  = "10s"
  healthy_deadline  = "3m"
  progress_deadline = "10m"
}

# The canary is judged by what it serves before it is promoted
# (docs/analysis.md; docs/environments.md says why these values): a
# release that fails users is failed on its numbers, and one that could not
# be judged (fewer than min_sample GET / answers in max_duration) is failed
# too: prod never promotes an un-judged release. Releases need traffic
# through the URL while they are judged; make demo sends it.
analysis {
  alpha        = 0.01
  min_sample   = 300
  interval     = "10s"
  max_duration = "5m"
  inconclusive = "fail"

  latency {
    quantile  = 0.9
    threshold = "25ms"
  }
}
