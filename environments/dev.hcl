# The dev environment: the local stack that `make up` starts. Its Redis plays
# the seed's redis_db_dev on the loopback address.
datacenters = ["dc1"]
count       = 1

config {
  HOST = "127.0.0.1"
  PORT = 6379
}

resources {
  cpu    = 100
  memory = 64
}

update {
  auto_revert      = true
  min_healthy_time = "3s"
  healthy_deadline = "45s"
}
