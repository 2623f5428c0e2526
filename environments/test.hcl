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

update {
  canary            = 1
  auto_promote      = true
  auto_revert       = true
  min_healthy_time  = "10s"
  healthy_deadline  = "2m"
  progress_deadline = "3m"
}
