# The counter service as a Nomad job. The deployer fills the variables from
# one environment file and one pinned image; the config the app reads lives
# at config_path in Consul KV, a path that belongs to this release alone, so
# reverting to this job version brings its config back too.
#
# The variables have no defaults: the deployer sets every one of them from
# the environment file, whose reader (internal/environment) holds the
# defaults, so there is one place to look. The one exception, extra_hosts,
# is not the environment's: it comes from the machine (a local stack).

variable "job_name" {
  type        = string
  description = "Nomad job ID, one per environment."
}

variable "namespace" {
  type = string
}

variable "datacenters" {
  type = list(string)
}

variable "count" {
  type = number
}

variable "image" {
  type        = string
  description = "The release's image, pinned: repo@sha256:... where a registry answers."
}

variable "config_path" {
  type        = string
  description = "Consul KV folder of this release's config snapshot (write-once)."
}

variable "cpu" {
  type = number
}

variable "memory" {
  type = number
}

variable "update" {
  type = object({
    max_parallel      = number
    canary            = number
    auto_revert       = bool
    auto_promote      = bool
    min_healthy_time  = string
    healthy_deadline  = string
    progress_deadline = string
  })
}

variable "release" {
  type        = map(string)
  description = "The release's identity, kept in job meta for the UI, history and rollback."
}

variable "config" {
  type        = map(string)
  description = "The config written to config_path. The job does not read it: it is kept with the job version so that a snapshot edited or deleted in Consul can be restored."
}

variable "extra_hosts" {
  type        = list(string)
  default     = []
  description = "/etc/hosts entries, NAME:IP, for names only a local stack resolves (COUNTER_EXTRA_HOSTS); empty on a real cluster, where DNS does."
}

variable "description" {
  type        = string
  description = "What the Nomad UI shows at the top of the job page."
}

job "counter" {
  id = var.job_name
  # The Nomad UI lists jobs by name: with the ID as name, dev and prod can be
  # told apart there.
  name        = var.job_name
  namespace   = var.namespace
  datacenters = var.datacenters
  type        = "service"

  meta = var.release

  ui {
    description = var.description
  }

  update {
    max_parallel      = var.update.max_parallel
    canary            = var.update.canary
    auto_revert       = var.update.auto_revert
    auto_promote      = var.update.auto_promote
    min_healthy_time  = var.update.min_healthy_time
    healthy_deadline  = var.update.healthy_deadline
    progress_deadline = var.update.progress_deadline
    health_check      = "checks"
  }

  group "web" {
    count = var.count

    # Instances spread over the nodes, so that a lost node takes only its
    # share with it: a spread (a preference), not distinct_hosts (a rule),
    # so that count may exceed the nodes and a canary still finds a place
    # beside the instance it replaces.
    spread {
      attribute = "${node.unique.id}"
    }

    # An instance being replaced or stopped leaves Consul first, and stops
    # 3 s later, once every front door has stopped sending to it: HAProxy
    # asks Consul's DNS every second (timeout resolve 1s), asks again 1 s
    # after an answer it did not get (timeout retry 1s), and lets the
    # requests it already sent finish; 3 s covers both and leaves 1 s for
    # those (docs/stack.md, "Graceful moves", has the measured figures).
    shutdown_delay = "3s"

    network {
      port "http" {}
    }

    service {
      name     = var.job_name
      port     = "http"
      provider = "consul"
      tags     = ["counter", "release-${var.release.release_config_hash}"]
      # A canary carries "canary" until it is promoted (Nomad then gives it
      # tags), so a front door can tell it apart from the instances it
      # replaces: canary.JOB.service.consul names the canaries alone.
      canary_tags = ["counter", "release-${var.release.release_config_hash}", "canary"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "2s"
        timeout  = "1s"
      }
    }

    task "app" {
      driver = "docker"

      # With ACLs on, the template reads Consul with a token of the task's
      # own workload identity, which gives it the policy of this job alone
      # (nomad-job-NAMESPACE_JOB). Without ACLs the block changes nothing.
      consul {}

      config {
        image        = var.image
        network_mode = "host"
        extra_hosts  = var.extra_hosts
      }

      # HOST and PORT come from this release's snapshot. The template waits
      # for the keys, so a release whose snapshot is gone never turns healthy.
      template {
        data        = <<-EOT
          HOST={{ key "${var.config_path}/HOST" }}
          PORT={{ key "${var.config_path}/PORT" }}
        EOT
        destination = "secrets/config.env"
        env         = true
        change_mode = "restart"
      }

      env {
        LISTEN_ADDR = "${NOMAD_ADDR_http}"
      }

      resources {
        cpu    = var.cpu
        memory = var.memory
      }

      kill_timeout = "15s"
    }
  }
}
