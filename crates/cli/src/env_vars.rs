//! Every environment variable slotbox reads, declared once.
//!
//! Settings resolve as command line > environment > configuration file > built-in default.
//! clap's `env = …` attributes name these constants, so `--help` lists each variable beside its
//! flag.

/// Default backend of `slotbox exec` (`local` or `bwrap`).
pub(crate) const SLOTBOX_BACKEND: &str = "SLOTBOX_BACKEND";
/// Default image of the docker backend of `slotbox exec`.
pub(crate) const SLOTBOX_DOCKER_IMAGE: &str = "SLOTBOX_DOCKER_IMAGE";
/// hermes-agent's backend choice, read when `--backend`/`SLOTBOX_BACKEND` are not given, so its
/// users can switch without rewriting their settings.
pub(crate) const TERMINAL_ENV: &str = "TERMINAL_ENV";
/// hermes-agent's docker image setting (alias of `SLOTBOX_DOCKER_IMAGE`, which wins).
pub(crate) const TERMINAL_DOCKER_IMAGE: &str = "TERMINAL_DOCKER_IMAGE";
/// hermes-agent's singularity/apptainer image (read when `--image` is not given).
pub(crate) const TERMINAL_SINGULARITY_IMAGE: &str = "TERMINAL_SINGULARITY_IMAGE";
/// hermes-agent's command timeout in seconds (read when `--timeout` is not given).
pub(crate) const TERMINAL_TIMEOUT: &str = "TERMINAL_TIMEOUT";
/// The host of the ssh backend of `slotbox exec`.
pub(crate) const SLOTBOX_SSH_HOST: &str = "SLOTBOX_SSH_HOST";
/// The remote user of the ssh backend.
pub(crate) const SLOTBOX_SSH_USER: &str = "SLOTBOX_SSH_USER";
/// hermes-agent's ssh host (alias of `SLOTBOX_SSH_HOST`, which wins).
pub(crate) const TERMINAL_SSH_HOST: &str = "TERMINAL_SSH_HOST";
/// hermes-agent's ssh user (alias of `SLOTBOX_SSH_USER`, which wins).
pub(crate) const TERMINAL_SSH_USER: &str = "TERMINAL_SSH_USER";
/// hermes-agent's ssh port (read when `--ssh-port` is not given).
pub(crate) const TERMINAL_SSH_PORT: &str = "TERMINAL_SSH_PORT";
/// hermes-agent's ssh key (read when `--ssh-key` is not given).
pub(crate) const TERMINAL_SSH_KEY: &str = "TERMINAL_SSH_KEY";
/// The bubblewrap binary to use instead of the first `bwrap` on `PATH`.
pub(crate) const SLOTBOX_BWRAP: &str = "SLOTBOX_BWRAP";
/// Log filter for slotbox's own diagnostics on stderr (tracing `EnvFilter` syntax).
pub(crate) const SLOTBOX_LOG: &str = "SLOTBOX_LOG";
/// Bearer token of `slotbox serve` (so it stays out of `ps` output).
pub(crate) const SLOTBOX_TOKEN: &str = "SLOTBOX_TOKEN";
/// The configuration file (TOML), when `--config` is not given.
pub(crate) const SLOTBOX_CONFIG: &str = "SLOTBOX_CONFIG";
/// The model server of `slotbox rollout` (an OpenAI base URL).
pub(crate) const SLOTBOX_MODEL_URL: &str = "SLOTBOX_MODEL_URL";
/// The model name of `slotbox rollout`.
pub(crate) const SLOTBOX_MODEL: &str = "SLOTBOX_MODEL";
/// The slot pool `slotbox rollout` leases from (instead of starting one).
pub(crate) const SLOTBOX_POOL_URL: &str = "SLOTBOX_POOL_URL";
/// Nomad's HTTP API for `slotbox up --scheduler nomad` (Nomad's own variable).
pub(crate) const NOMAD_ADDR: &str = "NOMAD_ADDR";
/// Nomad ACL token (Nomad's own variable; kept out of command lines).
pub(crate) const NOMAD_TOKEN: &str = "NOMAD_TOKEN";
/// Nomad namespace (Nomad's own variable).
pub(crate) const NOMAD_NAMESPACE: &str = "NOMAD_NAMESPACE";
/// Nomad region (Nomad's own variable).
pub(crate) const NOMAD_REGION: &str = "NOMAD_REGION";
/// Set by Nomad inside an allocation: `slotbox serve` keeps its data under `$NOMAD_ALLOC_DIR/data`.
pub(crate) const NOMAD_ALLOC_DIR: &str = "NOMAD_ALLOC_DIR";
