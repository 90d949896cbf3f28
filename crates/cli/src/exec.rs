//! `slotbox exec`: one command through the execution core.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::ValueEnum;
use slotbox_exec::Backend;
use slotbox_exec::BubblewrapConfig;
use slotbox_exec::ExecRequest;
use slotbox_exec::Interrupt;
use slotbox_exec::Network;
use slotbox_exec::OutputCap;
use slotbox_exec::SessionConfig;
use slotbox_exec::StallTimeout;
use slotbox_exec::Timeout;

use crate::ExitStatus;
use crate::env_vars;

/// Backends `slotbox exec` can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendName {
    /// Directly on this host, no isolation.
    Local,
    /// In a bubblewrap sandbox (workspace read-write, system read-only, no network).
    Bwrap,
    /// In a container of its own on the local Docker Engine (workspace bound read-write, no
    /// network, no capabilities, limits).
    Docker,
    /// In `apptainer exec` of an image (`--image`: a SIF file or e.g. docker://debian:12).
    Apptainer,
    /// On another machine over one persistent ssh connection (`--ssh-host`).
    Ssh,
}

impl BackendName {
    /// A backend named as slotbox or hermes-agent (`TERMINAL_ENV`) names it. Names of backends
    /// slotbox does not have here are refused with a reason: never a silent fallback.
    pub(crate) fn parse_alias(name: &str) -> anyhow::Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(Self::Local),
            "bwrap" | "bubblewrap" => Ok(Self::Bwrap),
            "docker" => Ok(Self::Docker),
            "singularity" | "apptainer" => Ok(Self::Apptainer),
            "ssh" => Ok(Self::Ssh),
            other => anyhow::bail!(
                "unknown backend {other:?}; expected local, bwrap (bubblewrap), docker, apptainer (singularity) or ssh"
            ),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// Configuration file (TOML, table `[exec]`; see docs/config.md).
    #[arg(long, env = env_vars::SLOTBOX_CONFIG)]
    pub(crate) config: Option<PathBuf>,

    /// Where the command runs [default: local; hermes-agent's TERMINAL_ENV is read too].
    #[arg(long, value_enum, env = env_vars::SLOTBOX_BACKEND)]
    pub(crate) backend: Option<BackendName>,

    /// Time limit in seconds; on expiry the command's process group is killed and slotbox exits
    /// with 124 [default: 60; hermes-agent's TERMINAL_TIMEOUT is read too].
    #[arg(long, value_parser = parse_seconds)]
    pub(crate) timeout: Option<f64>,

    /// docker: the image (it needs /bin/bash and glibc) [default: SLOTBOX_DOCKER_IMAGE, else
    /// hermes-agent's TERMINAL_DOCKER_IMAGE, else slotbox-sandbox:latest]; apptainer: the image
    /// (a SIF file or e.g. docker://debian:12) [default: TERMINAL_SINGULARITY_IMAGE].
    #[arg(long)]
    pub(crate) image: Option<String>,

    /// ssh: the host [hermes-agent's TERMINAL_SSH_HOST is read too].
    #[arg(long, env = env_vars::SLOTBOX_SSH_HOST)]
    pub(crate) ssh_host: Option<String>,

    /// ssh: the remote user [hermes-agent's TERMINAL_SSH_USER is read too].
    #[arg(long, env = env_vars::SLOTBOX_SSH_USER)]
    pub(crate) ssh_user: Option<String>,

    /// ssh: the port [hermes-agent's TERMINAL_SSH_PORT is read too].
    #[arg(long)]
    pub(crate) ssh_port: Option<u16>,

    /// ssh: the private key (no passwords) [hermes-agent's TERMINAL_SSH_KEY is read too].
    #[arg(long)]
    pub(crate) ssh_key: Option<PathBuf>,

    /// ssh: a known-hosts file with the host's key (host keys are always checked).
    #[arg(long)]
    pub(crate) known_hosts: Option<PathBuf>,

    /// ssh: the remote workspace (absolute); default: the remote home.
    #[arg(long)]
    pub(crate) remote_workspace: Option<String>,

    /// docker: memory limit in MiB (0: none).
    #[arg(long, default_value_t = 4096)]
    pub(crate) memory_mb: u64,

    /// docker: process limit (0: none).
    #[arg(long, default_value_t = 1024)]
    pub(crate) pids: u64,

    /// docker: CPU limit in cores (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) cpus: f64,

    /// Kill the command (exit 124) when it prints nothing for this many seconds.
    #[arg(long, value_parser = parse_seconds)]
    pub(crate) stall_timeout: Option<f64>,

    /// The workspace directory (bound read-write at /workspace under bwrap).
    #[arg(long, default_value = ".")]
    pub(crate) workspace: PathBuf,

    /// The directory the command starts in, as the backend sees it (default: the workspace).
    #[arg(long)]
    pub(crate) cwd: Option<String>,

    /// Output cap in characters; longer output keeps its first 40 % and last 60 %.
    #[arg(long, default_value_t = slotbox_protocol::DEFAULT_MAX_OUTPUT_CHARS)]
    pub(crate) max_output_chars: usize,

    /// Pipe this file to the command's stdin (default: stdin is /dev/null).
    #[arg(long)]
    pub(crate) stdin_file: Option<PathBuf>,

    /// Let a bwrap sandbox or a container use the network.
    #[arg(long)]
    pub(crate) network: bool,

    /// Pass this variable of slotbox's own environment to the command (repeatable); nothing else
    /// is inherited.
    #[arg(long = "allow-env", value_name = "NAME")]
    pub(crate) allow_env: Vec<String>,

    /// The bwrap binary.
    #[arg(long, env = env_vars::SLOTBOX_BWRAP)]
    pub(crate) bwrap: Option<PathBuf>,

    /// Print the whole result as JSON (exit_code, output, timed_out, truncated, cwd, duration_ms).
    #[arg(long)]
    pub(crate) json: bool,

    /// The command, run by bash; several words are joined with spaces.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub(crate) command: Vec<String>,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 31_536_000.0 {
        return Err(format!(
            "{text} is out of range (more than 0, at most one year)"
        ));
    }
    Ok(seconds)
}

pub(crate) async fn run(mut args: ExecArgs) -> anyhow::Result<ExitStatus> {
    let workspace = std::fs::canonicalize(&args.workspace)
        .with_context(|| format!("workspace {}", args.workspace.display()))?;
    // Settings: command line > environment (slotbox's, then hermes-agent's) > file > default.
    let file = crate::config::load(args.config.as_deref())?.exec;
    let backend_name = match (args.backend, std::env::var(env_vars::TERMINAL_ENV)) {
        (Some(name), _) => name,
        (None, Ok(name)) if !name.trim().is_empty() => BackendName::parse_alias(&name)
            .with_context(|| format!("from {}", env_vars::TERMINAL_ENV))?,
        (None, _) => match &file.backend {
            Some(name) => BackendName::parse_alias(name).context("[exec] backend")?,
            None => BackendName::Local,
        },
    };
    let timeout = match (args.timeout, std::env::var(env_vars::TERMINAL_TIMEOUT)) {
        (Some(seconds), _) => seconds,
        (None, Ok(text)) if !text.trim().is_empty() => parse_seconds(text.trim())
            .map_err(|reason| anyhow::anyhow!("{}: {reason}", env_vars::TERMINAL_TIMEOUT))?,
        (None, _) => match file.timeout_s {
            Some(seconds) => parse_seconds(&seconds.to_string())
                .map_err(|reason| anyhow::anyhow!("[exec] timeout_s: {reason}"))?,
            None => 60.0,
        },
    };
    // The file's values come last: after the flags and both families of variables.
    let env_or = |names: &[&str]| {
        names.iter().any(|name| {
            std::env::var(name)
                .ok()
                .is_some_and(|value| !value.trim().is_empty())
        })
    };
    if args.image.is_none()
        && !env_or(&[
            env_vars::SLOTBOX_DOCKER_IMAGE,
            env_vars::TERMINAL_DOCKER_IMAGE,
            env_vars::TERMINAL_SINGULARITY_IMAGE,
        ])
    {
        args.image = file.image.clone();
    }
    if args.ssh_host.is_none() && !env_or(&[env_vars::TERMINAL_SSH_HOST]) {
        args.ssh_host = file.ssh_host.clone();
    }
    if args.ssh_user.is_none() && !env_or(&[env_vars::TERMINAL_SSH_USER]) {
        args.ssh_user = file.ssh_user.clone();
    }
    if args.ssh_port.is_none() && !env_or(&[env_vars::TERMINAL_SSH_PORT]) {
        args.ssh_port = file.ssh_port;
    }
    if args.ssh_key.is_none() && !env_or(&[env_vars::TERMINAL_SSH_KEY]) {
        args.ssh_key = file.ssh_key.clone();
    }
    args.known_hosts = args.known_hosts.take().or(file.known_hosts.clone());
    args.remote_workspace = args
        .remote_workspace
        .take()
        .or(file.remote_workspace.clone());
    let from_env = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    };
    let backend = match backend_name {
        BackendName::Ssh => {
            let host = args
                .ssh_host
                .clone()
                .or_else(|| from_env(env_vars::TERMINAL_SSH_HOST))
                .context("--backend ssh needs --ssh-host (or TERMINAL_SSH_HOST)")?;
            let mut config = slotbox_exec::SshConfig::new(host);
            config.user = args
                .ssh_user
                .clone()
                .or_else(|| from_env(env_vars::TERMINAL_SSH_USER));
            config.port = match (args.ssh_port, from_env(env_vars::TERMINAL_SSH_PORT)) {
                (Some(port), _) => Some(port),
                (None, Some(port)) => Some(port.trim().parse().with_context(|| {
                    format!("{} is not a port: {port}", env_vars::TERMINAL_SSH_PORT)
                })?),
                (None, None) => None,
            };
            config.identity = args
                .ssh_key
                .clone()
                .or_else(|| from_env(env_vars::TERMINAL_SSH_KEY).map(PathBuf::from));
            config.known_hosts = args.known_hosts.clone();
            config.workspace = args.remote_workspace.clone();
            anyhow::ensure!(!args.network, "--network does not apply to the ssh backend");
            Backend::Ssh(config)
        }
        BackendName::Apptainer => {
            let image = args
                .image
                .clone()
                .or_else(|| from_env(env_vars::TERMINAL_SINGULARITY_IMAGE))
                .context(
                    "--backend apptainer needs --image (a SIF file or e.g. docker://debian:12)",
                )?;
            let mut config = slotbox_exec::ApptainerConfig::new(image);
            if args.network {
                config.network = Network::On;
            }
            Backend::Apptainer(config)
        }
        BackendName::Docker => {
            let image = args
                .image
                .clone()
                .or_else(|| from_env(env_vars::SLOTBOX_DOCKER_IMAGE))
                .or_else(|| from_env(env_vars::TERMINAL_DOCKER_IMAGE))
                .unwrap_or_else(|| "slotbox-sandbox:latest".to_owned());
            let agent = slotbox_exec::AgentCommand {
                program: std::env::current_exe().context("locating the slotbox binary")?,
                args: vec!["__sandbox-agent".to_owned()],
            };
            let mut config = slotbox_exec::DockerConfig::new(image, agent);
            if args.network {
                config.network = Network::On;
            }
            config.memory_bytes = (args.memory_mb > 0)
                .then(|| i64::try_from(args.memory_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX));
            config.pids = (args.pids > 0).then(|| i64::try_from(args.pids).unwrap_or(i64::MAX));
            anyhow::ensure!(
                args.cpus.is_finite() && args.cpus >= 0.0,
                "--cpus must be a number of cores"
            );
            #[allow(clippy::cast_possible_truncation)]
            {
                config.nano_cpus = (args.cpus > 0.0).then(|| (args.cpus * 1e9).min(1e18) as i64);
            }
            Backend::Docker(config)
        }
        BackendName::Local => {
            anyhow::ensure!(
                !args.network,
                "--network does not apply to the local backend (it has the host's network)"
            );
            Backend::Local
        }
        BackendName::Bwrap => {
            let mut config = BubblewrapConfig::default();
            if let Some(bwrap) = args.bwrap {
                config.bwrap = bwrap;
            }
            if args.network {
                config.network = Network::On;
            }
            Backend::Bubblewrap(config)
        }
    };
    let cwd = match (&args.cwd, &backend) {
        // Locally a relative --cwd means relative to where slotbox was started, as with any tool.
        (Some(cwd), Backend::Local) => Some(
            std::path::absolute(cwd)
                .with_context(|| format!("--cwd {cwd}"))?
                .to_str()
                .context("--cwd is not valid UTF-8")?
                .to_owned(),
        ),
        (cwd, _) => cwd.clone(),
    };
    let mut env = slotbox_exec::EnvPolicy::default();
    for name in args.allow_env {
        env = env.allow(name);
    }
    let stdin = match &args.stdin_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading --stdin-file {}", path.display()))?,
        ),
        None => None,
    };
    let config = SessionConfig {
        cwd,
        env,
        ..SessionConfig::new(backend, workspace)
    };
    let interrupt = Interrupt::new();
    let mut request = ExecRequest::new(args.command.join(" "))
        .timeout(Some(Timeout::new(Duration::from_secs_f64(timeout))))
        .max_output(OutputCap::chars(args.max_output_chars))
        .interrupt(interrupt.clone());
    if let Some(stall) = args.stall_timeout {
        request = request.stall_timeout(StallTimeout::new(Duration::from_secs_f64(stall)));
    }
    request.stdin = stdin;

    // Ctrl-C interrupts the command (exit 130, process group killed) instead of orphaning it.
    let on_ctrl_c = interrupt.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.trigger();
        }
    });

    // A session, not a one-shot call: the command sees the login profile's environment, as an
    // agent's first command would, and the result reports the cwd it ended in.
    let mut session = slotbox_exec::Session::start(config).await?;
    let result = session.exec(&request).await?;
    let mut stdout = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer(&mut stdout, &result)
            .map_err(std::io::Error::from)
            .and_then(|()| stdout.write_all(b"\n"))
    } else {
        stdout.write_all(result.output.as_bytes())
    };
    match written.and_then(|()| stdout.flush()) {
        // A closed stdout (`slotbox exec … | head`) is the reader's choice, not an error.
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(error).context("writing the output");
        }
        _ => {}
    }
    Ok(ExitStatus::Command(result.exit_code))
}
