# The test environment, as in the seed: Redis at redis_db_test:6379.
datacenters = ["dc1"]
count       = 1

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
