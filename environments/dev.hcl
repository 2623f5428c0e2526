# The dev environment: the local stack that `make up` starts. Its Redis plays
# the seed's redis_db_dev on the loopback address.
datacenters = ["dc1"]
count       = 1

# Where users reach dev: the local stack's front door (HAProxy, fed from
# Consul) listens here and sends each request to a passing instance, so the
# URL stays the same across releases, rollbacks and restarts.
url = "http://127.0.0.1:8081/"

config {
  HOST = "127.0.0.1"
  PORT = 6379
}

resources {
  cpu    = 100
  memory = 64
}

# A dev loop: one canary replaces the running instance once it is healthy
# (3 s of passing checks); one that is not healthy 30 s after it starts fails
# the release, and Nomad reverts it, while the old instance keeps serving.
update {
  canary            = 1
  auto_promote      = true
  auto_revert       = true
  min_healthy_time  = "3s"
  healthy_deadline  = "30s"
  progress_deadline = "45s"
}
