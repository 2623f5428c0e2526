# Production, as in the seed: Redis at redis_db_prod:6379. Two instances,
# one canary that must be healthy before the rest are replaced.
datacenters = ["dc1"]
count       = 2

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
