# The job `slotbox up --scheduler nomad` registers with the docker driver, written as HCL: the
# same job as `NomadConfig::job_spec` builds (crates/pool/src/nomad.rs), for reading, reviewing
# and trying by hand (`nomad job run -var server_token=... slotbox-docker.nomad.hcl`).
#
# The pool registers and scales this job itself through the HTTP API; you do not need this file
# to run it. If you register it yourself first, use the pool's job id, group name and server
# token: the pool then re-registers the same job and adopts the running allocations.
#
# Requirements (docs/nomad.md): the image built by scripts/build-image.sh available to every
# client's Docker, and `allow_privileged = true` in the clients' docker plugin configuration.

variable "image" {
  type        = string
  default     = "slotbox-sandbox:latest"
  description = "The sandbox-server image (scripts/build-image.sh); its entry point runs slotbox."
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

    # One dynamic port; Docker maps the host port to the same port in the container, where the
    # server listens on ${NOMAD_PORT_http}.
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
      driver = "docker"

      config {
        image = var.image
        ports = ["http"]
        # The image's entry point runs `slotbox` with these arguments. Further `slotbox serve`
        # options (limits, --isolation) go after them.
        args = [
          "serve",
          "--host", "0.0.0.0",
          "--port", "${NOMAD_PORT_http}",
          "--slots", "${var.slots}",
        ]

        # bubblewrap nested in a container needs what Docker withholds by default:
        #   - CAP_SYS_ADMIN (namespaces and mounts),               docker: --cap-add SYS_ADMIN
        #   - seccomp and AppArmor unconfined (unshare, mount),    docker: --security-opt seccomp=unconfined
        #                                                                  --security-opt apparmor=unconfined
        #   - an unmasked /proc: the kernel refuses bwrap's fresh procfs while parts of /proc
        #     are masked,                                          docker: --security-opt systempaths=unconfined
        # `systempaths` is an option of the docker CLI only: the daemon API rejects it in
        # security_opt ("invalid --security-opt 2"), and Nomad's driver has no masked-paths
        # setting. `privileged` is the one Nomad setting that grants all four (the clients need
        # allow_privileged = true). The container is packaging and a resource envelope; each
        # slot's security boundary is its own bubblewrap sandbox.
        privileged = true

        # Reaps the orphans of slot commands (the server is not pid 1).
        init = true
      }

      # In the environment, not on the command line. Anyone with read-job on the namespace can
      # read it from the job.
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
