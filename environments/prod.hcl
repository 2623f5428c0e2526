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

update {
  max_parallel      = 1
  canary            = 1
  auto_promote      = true
  auto_revert       = true
  min_healthy_time  = "10s"
  healthy_deadline  = "3m"
  progress_deadline = "10m"
}
