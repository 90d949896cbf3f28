//! The configuration file (`--config PATH` or `SLOTBOX_CONFIG`), TOML.
//!
//! Settings resolve as command line > environment > this file > built-in default: clap yields
//! `None` for what neither the command line nor the environment set, and the file fills in
//! from there. Unknown keys are errors (a typo must not silently fall back to a default).
//! `docs/config.md` documents every key; `examples/slotbox.toml` is a complete example.

use std::net::IpAddr;
use std::path::Path;
use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

/// The whole file: one table per command.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// `slotbox up`.
    #[serde(default)]
    pub(crate) up: UpFile,
    /// `slotbox exec`.
    #[serde(default)]
    pub(crate) exec: ExecFile,
    /// `slotbox serve`.
    #[serde(default)]
    pub(crate) serve: ServeFile,
    /// `slotbox rollout`.
    #[serde(default)]
    pub(crate) rollout: RolloutFile,
}

/// `[rollout]`: the rollout engine (keys named as the flags, `_` for `-`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutFile {
    pub(crate) model_url: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) api_key_env: Option<String>,
    pub(crate) pool: Option<String>,
    pub(crate) concurrency: Option<u32>,
    pub(crate) samples: Option<u32>,
    pub(crate) max_turns: Option<u32>,
    pub(crate) parser: Option<String>,
    pub(crate) strict_parsing: Option<bool>,
    pub(crate) send_tools: Option<bool>,
    pub(crate) max_context_tokens: Option<u64>,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) temperature: Option<f64>,
    /// Extra request fields, as a TOML table.
    pub(crate) extra_body: Option<toml::Table>,
    pub(crate) system: Option<String>,
    pub(crate) command_timeout_s: Option<f64>,
    pub(crate) rollout_timeout_s: Option<f64>,
    pub(crate) setup_timeout_s: Option<f64>,
    pub(crate) verify_timeout_s: Option<f64>,
    pub(crate) request_timeout_s: Option<f64>,
    pub(crate) retries: Option<u32>,
    pub(crate) backoff_ms: Option<u64>,
    pub(crate) slots_per_server: Option<u32>,
}

/// `[exec]`: where `slotbox exec` runs commands.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecFile {
    /// `local`, `bwrap`, `docker`, `apptainer` or `ssh` (hermes-agent's names too).
    pub(crate) backend: Option<String>,
    /// Default command timeout in seconds.
    pub(crate) timeout_s: Option<f64>,
    /// docker / apptainer image.
    pub(crate) image: Option<String>,
    pub(crate) ssh_host: Option<String>,
    pub(crate) ssh_user: Option<String>,
    pub(crate) ssh_port: Option<u16>,
    pub(crate) ssh_key: Option<PathBuf>,
    pub(crate) known_hosts: Option<PathBuf>,
    pub(crate) remote_workspace: Option<String>,
}

/// `[serve]`: how `slotbox serve` isolates its slots.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServeFile {
    /// `auto`, `bwrap`, `docker` or `none`.
    pub(crate) isolation: Option<String>,
    /// The image of `isolation = "docker"`.
    pub(crate) image: Option<String>,
}

/// `[up]`: the slot pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpFile {
    pub(crate) scheduler: Option<String>,
    pub(crate) min: Option<u32>,
    pub(crate) max: Option<u32>,
    pub(crate) slots_per_server: Option<u32>,
    pub(crate) host: Option<IpAddr>,
    pub(crate) port: Option<u16>,
    /// Arguments for every `slotbox serve` (limits, e.g. `["--pids", "512"]`).
    pub(crate) serve_args: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) autoscale: AutoscaleFile,
    #[serde(default)]
    pub(crate) docker: DockerFile,
    #[serde(default)]
    pub(crate) nomad: NomadFile,
}

/// `[up.autoscale]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AutoscaleFile {
    pub(crate) scale_up_after_s: Option<f64>,
    pub(crate) idle_after_s: Option<f64>,
    pub(crate) cooldown_s: Option<f64>,
    pub(crate) max_starting: Option<u32>,
}

/// `[up.docker]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DockerFile {
    pub(crate) image: Option<String>,
    pub(crate) pool_name: Option<String>,
    pub(crate) publish_ip: Option<String>,
    /// Memory limit of each container (the envelope of its slots), MiB.
    pub(crate) container_memory_mb: Option<u64>,
    /// Process limit of each container.
    pub(crate) container_pids: Option<u64>,
    /// CPU limit of each container, in cores.
    pub(crate) container_cpus: Option<f64>,
}

/// `[up.nomad]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NomadFile {
    pub(crate) address: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) job_id: Option<String>,
    pub(crate) datacenters: Option<Vec<String>>,
    /// `raw_exec` or `docker`.
    pub(crate) driver: Option<String>,
    /// raw_exec: the slotbox binary on the Nomad clients.
    pub(crate) binary: Option<PathBuf>,
    /// docker: the sandbox-server image.
    pub(crate) image: Option<String>,
    pub(crate) cpu_mhz: Option<u32>,
    pub(crate) memory_mb: Option<u32>,
}

/// Reads `path`, or an empty configuration when there is none.
pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<ConfigFile> {
    let Some(path) = path else {
        return Ok(ConfigFile::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    parse(&text).with_context(|| format!("in the configuration file {}", path.display()))
}

fn parse(text: &str) -> anyhow::Result<ConfigFile> {
    Ok(toml::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_completely() {
        let text = include_str!("../../../examples/slotbox.toml");
        let config = parse(text).unwrap();
        assert_eq!(config.up.scheduler.as_deref(), Some("local"));
        assert_eq!(config.up.autoscale.max_starting, Some(4));
        assert_eq!(config.up.nomad.driver.as_deref(), Some("raw_exec"));
        assert_eq!(
            config.up.docker.image.as_deref(),
            Some("slotbox-sandbox:latest")
        );
        assert_eq!(config.exec.backend.as_deref(), Some("local"));
        assert_eq!(config.serve.isolation.as_deref(), Some("auto"));
        assert_eq!(config.rollout.parser.as_deref(), Some("native"));
        assert_eq!(
            config.rollout.extra_body.unwrap()["top_p"].as_float(),
            Some(0.95)
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors() {
        let typo = parse("[up]\nslots_per_sever = 4\n").unwrap_err();
        assert!(format!("{typo:#}").contains("slots_per_sever"), "{typo:#}");
        let wrong = parse("[up]\nmin = \"two\"\n").unwrap_err();
        assert!(format!("{wrong:#}").contains("min"), "{wrong:#}");
        assert!(parse("").unwrap().up.min.is_none());
    }
}
