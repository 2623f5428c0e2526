# The test environment, as in the seed: Redis at redis_db_test:6379.
datacenters = ["dc1"]
count       = 1

# Where users reach test: the local stack's front door (HAProxy, fed from
# Consul) listens here and sends each request to a passing instance, so the
# URL stays the same across releases, rollbacks and restarts. On a real
# cluster it is the environment's public URL, served by its front door.
url = "http://127.0.0.1:8082/"

config {
  HOST = "redis_db_test"
  PORT = 6379
}

resources {
  cpu    = 100
  memory = 64
}

# One canary beside the stable instance, promoted by the deployer's analysis
# below, not by Nomad once healthy; a canary that is failed, or never turns
# healthy, is reverted while the old instance keeps serving.
update {
  canary            = 1
  auto_revert       = true
  min_healthy_time  = "10s"
  healthy_deadline  = "2m"
  progress_deadline = "3m"
}

# The canary is judged as prod's is, so that a release prod would fail
# fails here first, with a shorter deadline: test's traffic is the load its
# testers and CI send, which comes in the first minute or not at all
# (docs/environments.md says why these values). Releases need traffic
# through the URL while they are judged; make demo sends it.
analysis {
  alpha        = 0.01
  min_sample   = 300
  interval     = "5s"
  max_duration = "2m"
  inconclusive = "fail"

  latency {
    quantile  = 0.9
    threshold = "25ms"
  }
}
