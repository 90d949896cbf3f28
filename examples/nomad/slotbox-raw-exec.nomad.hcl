# The job `slotbox up --scheduler nomad` registers with the raw_exec driver, written as HCL: the
# same job as `NomadConfig::job_spec` builds (crates/pool/src/nomad.rs), for reading, reviewing
# and trying by hand (`nomad job run -var server_token=... slotbox-raw-exec.nomad.hcl`).
#
# The pool registers and scales this job itself through the HTTP API; you do not need this file
# to run it. If you register it yourself first, use the pool's job id, group name and server
# token: the pool then re-registers the same job and adopts the running allocations.
#
# Requirements (docs/nomad.md): the raw_exec plugin enabled on the clients, the slotbox binary at
# the same path on every client, bubblewrap and cgroups usable by the Nomad agent's user.

variable "slotbox_binary" {
  type        = string
  default     = "/usr/local/bin/slotbox"
  description = "Path of the slotbox binary on every client node."
}

variable "server_token" {
  type        = string
  description = "Bearer token every sandbox server requires (the pool's clients never see it)."
}

variable "slots" {
  type        = number
  default     = 10
  description = "Slots per sandbox server."
}

variable "servers" {
  type        = number
  default     = 0
  description = "Initial count; the pool scales the group itself."
}

job "slotbox" {
  type        = "service"
  datacenters = ["*"]

  group "sandbox" {
    count = var.servers

    # Host networking with one dynamic port: two servers on one node never collide.
    network {
      mode = "host"
      port "http" {}
    }

    # A server that exits fails its allocation at once: its slots' state is gone anyway, and
    # the replacement Nomad schedules gets a new id the pool can adopt.
    restart {
      attempts = 0
      interval = "30m"
      delay    = "15s"
      mode     = "fail"
    }

    reschedule {
      unlimited      = true
      delay          = "5s"
      delay_function = "exponential"
      max_delay      = "5m"
    }

    # No deployments: Nomad refuses to scale a job while one is active, and the pool checks
    # readiness itself (GET /v1/health on each server).
    update {
      max_parallel = 0
    }

    task "slotbox-serve" {
      driver = "raw_exec"

      config {
        command = var.slotbox_binary
        # Further `slotbox serve` options (limits, --isolation) go after these.
        args = [
          "serve",
          "--host", "0.0.0.0",
          "--port", "${NOMAD_PORT_http}",
          "--slots", "${var.slots}",
        ]
      }

      # In the environment, not on the command line, which `ps` shows. Anyone with read-job on
      # the namespace can read it from the job.
      env {
        SLOTBOX_TOKEN = var.server_token
      }

      resources {
        cpu    = 1000
        memory = 2048
      }

      # On SIGTERM the server kills its slots' commands, then exits.
      kill_signal  = "SIGTERM"
      kill_timeout = "10s"
    }
  }
}
