# The front door of one environment on a cluster of your own: HAProxy on
# every node marked as a load balancer (node meta frontdoor = "true"), in
# front of the passing instances Consul lists for the environment's
# service, with the settings the local stack's front door runs
# (internal/localstack/frontdoor.go; a test checks the two agree).
# docs/frontdoor.md explains each setting and what to change here.
#
# It holds no secret: HAProxy asks Consul's DNS interface, which answers
# with the agent's DNS token (acl.tokens.dns), not one of the job's.

variable "service" {
  type        = string
  description = "The Consul service of the app: the job name of environments/NAME.hcl."
  default     = "counter-prod"
}

variable "slots" {
  type        = number
  description = "Instances HAProxy can hold at once: at least twice count plus canaries."
  default     = 10
}

variable "http_port" {
  type        = number
  description = "The port users call: the environment file's url."
  default     = 80
}

variable "stats_port" {
  type        = number
  description = "HAProxy's stats page, and its Prometheus exporter at /metrics."
  default     = 8404
}

variable "consul_dns" {
  type        = list(string)
  description = "Consul agents' DNS addresses HAProxy asks, all at once; the first valid answer wins."
  default     = ["127.0.0.1:8600"]
}

variable "haproxy" {
  type        = string
  description = "The HAProxy binary on the node (Debian's haproxy package)."
  default     = "/usr/sbin/haproxy"
}

locals {
  nameservers = join("\n", [for i, addr in var.consul_dns : "  nameserver consul${i + 1} ${addr}"])
}

job "frontdoor" {
  type        = "system"
  datacenters = ["*"]

  constraint {
    attribute = "${meta.frontdoor}"
    value     = "true"
  }

  group "haproxy" {
    network {
      port "http" {
        static = var.http_port
      }
      port "stats" {
        static = var.stats_port
      }
    }

    task "haproxy" {
      # raw_exec runs the node's own HAProxy; with Docker Hub reachable,
      # driver "docker", image "haproxy:2.6", network_mode "host" and the
      # same args (with /local/haproxy.cfg) run the same config.
      driver = "raw_exec"

      config {
        command = var.haproxy
        args    = ["-W", "-db", "-f", "${NOMAD_TASK_DIR}/haproxy.cfg"]
      }

      template {
        destination   = "local/haproxy.cfg"
        change_mode   = "signal"
        change_signal = "SIGUSR2"
        data          = <<-EOT
          global
            log stdout format raw local0 notice

          defaults
            mode http
            log global
            option dontlognull
            timeout connect 2s
            timeout client 30s
            timeout server 30s
            timeout http-request 10s
            timeout queue 5s

          resolvers consul
          ${local.nameservers}
            accepted_payload_size 8192
            resolve_retries 3
            timeout resolve 1s
            timeout retry 1s
            hold valid 10s
            hold obsolete 0s
            hold nx 1s
            hold refused 30s
            hold timeout 30s
            hold other 30s

          frontend stats
            bind {{ env "NOMAD_ADDR_stats" }}
            http-request use-service prometheus-exporter if { path /metrics }
            stats enable
            stats uri /
            stats refresh 5s

          frontend app
            bind {{ env "NOMAD_ADDR_http" }}
            default_backend app

          backend app
            balance roundrobin
            option httpchk GET /readyz
            http-check expect status 200
            option redispatch 1
            retries 3
            retry-on conn-failure empty-response
            default-server check inter 1s fall 2 rise 2 init-addr none resolvers consul resolve-prefer ipv4 resolve-opts allow-dup-ip
            server-template app ${var.slots} _${var.service}._tcp.service.consul
        EOT
      }

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
