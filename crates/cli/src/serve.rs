//! `slotbox serve`: the sandbox server.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use clap::ValueEnum;
use slotbox_server::Isolation;
use slotbox_server::Limits;
use slotbox_server::ServerConfig;

use crate::ExitStatus;
use crate::env_vars;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum IsolationName {
    /// bubblewrap if it works here; otherwise refuse to start, saying why.
    Auto,
    /// bubblewrap, or refuse to start.
    Bwrap,
    /// A container per slot session on the local Docker Engine (`--image`).
    Docker,
    /// No isolation at all (commands run on the host); only when asked for explicitly.
    None,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to bind; anything but loopback requires --token.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to bind (0: any free port; the chosen address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Number of slots (slot_0 … slot_{N-1}).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    slots: u32,
    /// Where slot workspaces live; default `$NOMAD_ALLOC_DIR/data` under Nomad, else /data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Configuration file (TOML, table `[serve]`; see docs/config.md).
    #[arg(long, env = env_vars::SLOTBOX_CONFIG)]
    config: Option<PathBuf>,
    /// How slot commands are isolated [default: auto].
    #[arg(long, value_enum)]
    isolation: Option<IsolationName>,
    /// Bearer token required on every route but /v1/health.
    #[arg(long, env = env_vars::SLOTBOX_TOKEN, hide_env_values = true)]
    token: Option<String>,
    /// The bwrap binary.
    #[arg(long, env = env_vars::SLOTBOX_BWRAP)]
    bwrap: Option<PathBuf>,
    /// Memory limit per slot in MiB, enforced with cgroups (0: none).
    #[arg(long, default_value_t = 4096)]
    memory_mb: u64,
    /// Process and thread limit per slot, enforced with cgroups (0: none).
    #[arg(long, default_value_t = 1024)]
    pids: u64,
    /// CPU limit per slot in cores, enforced with cgroups (0: none).
    #[arg(long, default_value_t = 1.0)]
    cpus: f64,
    /// `--isolation docker`: the slots' image (it needs /bin/bash and glibc)
    /// [default: slotbox-sandbox:latest].
    #[arg(long, env = env_vars::SLOTBOX_DOCKER_IMAGE)]
    image: Option<String>,
    /// Stop as on SIGTERM when standard input reaches its end. A parent that starts the server
    /// with a pipe on stdin and holds the other end takes the server down with it however it
    /// dies, SIGKILL included (the kernel closes the pipe); `slotbox up` does this.
    #[arg(long)]
    stop_when_stdin_closes: bool,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitStatus> {
    if !args.host.is_loopback() && args.token.is_none() {
        anyhow::bail!(
            "refusing to listen on {} without a token: anyone who can reach it could run commands; pass --token (or {}) or bind 127.0.0.1",
            args.host,
            env_vars::SLOTBOX_TOKEN
        );
    }
    let data_dir = match (args.data_dir, std::env::var_os(env_vars::NOMAD_ALLOC_DIR)) {
        // An explicit flag wins (the seed silently ignored it under Nomad).
        (Some(dir), _) => dir,
        (None, Some(alloc)) => PathBuf::from(alloc).join("data"),
        (None, None) => PathBuf::from("/data"),
    };
    anyhow::ensure!(
        args.cpus.is_finite() && args.cpus >= 0.0,
        "--cpus must be a number of cores, 0 for no limit"
    );
    let limits = slotbox_exec::CgroupLimits {
        memory_bytes: (args.memory_mb > 0).then(|| args.memory_mb * 1024 * 1024),
        pids: (args.pids > 0).then_some(args.pids),
        cpu_millis: (args.cpus > 0.0).then(|| (args.cpus * 1000.0).round() as u64),
    };
    // Settings: command line > environment > file (`[serve]`) > default.
    let file = crate::config::load(args.config.as_deref())?.serve;
    let requested = match (args.isolation, &file.isolation) {
        (Some(isolation), _) => isolation,
        (None, Some(name)) => IsolationName::from_str(name, true).map_err(|_| {
            anyhow::anyhow!("[serve] isolation = {name:?}: expected auto, bwrap, docker or none")
        })?,
        (None, None) => IsolationName::Auto,
    };
    let isolation = if requested == IsolationName::Docker {
        let image = args
            .image
            .clone()
            .or(file.image.clone())
            .unwrap_or_else(|| "slotbox-sandbox:latest".to_owned());
        docker_isolation(&image, limits).await?
    } else {
        resolve_isolation(requested, args.bwrap, &data_dir, limits).await?
    };
    let config = ServerConfig {
        slots: args.slots as usize,
        data_dir: data_dir.clone(),
        isolation,
        token: args.token,
        limits: Limits::default(),
    };
    let listener = tokio::net::TcpListener::bind((args.host, args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let address = listener.local_addr().context("reading the bound address")?;
    let state = slotbox_server::AppState::new(config).context("preparing the slots")?;
    let stdin_closed = if args.stop_when_stdin_closes {
        Some(stdin_closed()?)
    } else {
        None
    };
    tracing::info!(%address, data_dir = %data_dir.display(), "slotbox serve ready");
    print_ready(&address);
    slotbox_server::serve(listener, state, shutdown_or_orphaned(stdin_closed))
        .await
        .context("serving")?;
    Ok(ExitStatus::Command(0))
}

#[allow(clippy::print_stdout)]
fn print_ready(address: &std::net::SocketAddr) {
    use std::io::Write;
    // One line on stdout that scripts (and tests using --port 0) read to find the server.
    println!("slotbox serve: listening on http://{address}");
    let _ = std::io::stdout().flush();
}

/// Each slot's session in a container of its own; the per-slot limits become the container's.
async fn docker_isolation(
    image: &str,
    limits: slotbox_exec::CgroupLimits,
) -> anyhow::Result<Isolation> {
    let agent = slotbox_exec::AgentCommand {
        program: std::env::current_exe().context("locating the slotbox binary for the agent")?,
        args: vec!["__sandbox-agent".to_owned()],
    };
    let mut config = slotbox_exec::DockerConfig::new(image, agent);
    config.memory_bytes = limits
        .memory_bytes
        .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX));
    config.pids = limits
        .pids
        .map(|pids| i64::try_from(pids).unwrap_or(i64::MAX));
    config.nano_cpus = limits
        .cpu_millis
        .map(|millis| i64::try_from(millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX));
    // Refuse to start without a working engine and image (never a silent downgrade).
    let scratch = tempfile::tempdir().context("creating a probe workspace")?;
    slotbox_exec::Session::start(slotbox_exec::SessionConfig::new(
        slotbox_exec::Backend::Docker(config.clone()),
        scratch.path(),
    ))
    .await
    .context("slot isolation with --isolation docker is unavailable")?;
    Ok(Isolation::Docker(config))
}

async fn resolve_isolation(
    requested: IsolationName,
    bwrap: Option<PathBuf>,
    data_dir: &std::path::Path,
    limits: slotbox_exec::CgroupLimits,
) -> anyhow::Result<Isolation> {
    if requested == IsolationName::None {
        tracing::warn!(
            "--isolation none: slot commands run on the host without any isolation or resource limits"
        );
        return Ok(Isolation::None);
    }
    let mut config_limits = None;
    if limits.any() {
        // Limits asked for and not enforceable: refuse, never run without them.
        let layout = slotbox_exec::CgroupLayout::detect().context(
            "resource limits need cgroups; pass --memory-mb 0 --pids 0 --cpus 0 to run without limits",
        )?;
        config_limits = Some(slotbox_exec::SandboxLimits { layout, limits });
    }
    let mut config = slotbox_exec::BubblewrapConfig::default();
    if let Some(bwrap) = bwrap {
        config.bwrap = bwrap;
    }
    // Each slot session keeps one sandbox, with this same binary as its agent inside.
    let program =
        std::env::current_exe().context("locating the slotbox binary for the sandbox agent")?;
    config.agent = Some(slotbox_exec::AgentCommand {
        program,
        args: vec!["__sandbox-agent".to_owned()],
    });
    config.limits = config_limits;
    let layout = slotbox_exec::probe::host_layout()?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    match slotbox_exec::probe::bubblewrap(&config, &layout, data_dir).await {
        Ok(()) => Ok(Isolation::Bubblewrap(config)),
        Err(error) => Err(anyhow::Error::new(error).context(
            "slot isolation is unavailable; fix that, or run without isolation explicitly with --isolation none",
        )),
    }
}

/// Resolves when standard input reaches its end (or cannot be read: the parent it stands for is
/// as good as gone).
fn stdin_closed() -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    use std::io::Read;
    let (closed, receiver) = tokio::sync::oneshot::channel();
    // A thread of its own, not the runtime's blocking pool: the runtime waits for its blocking
    // tasks when it shuts down, and this read ends only when the parent goes.
    std::thread::Builder::new()
        .name("stdin-watch".to_owned())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buffer = [0_u8; 256];
            loop {
                match stdin.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        tracing::warn!(%error, "reading standard input");
                        break;
                    }
                }
            }
            let _ = closed.send(());
        })
        .context("starting the thread that watches standard input")?;
    Ok(receiver)
}

/// Resolves on a stop signal, or when `stdin_closed` (if watched) says the parent is gone.
async fn shutdown_or_orphaned(stdin_closed: Option<tokio::sync::oneshot::Receiver<()>>) {
    let orphaned = async {
        match stdin_closed {
            Some(closed) => {
                // A dropped sender (the thread died) means the same: nobody holds us any more.
                let _ = closed.await;
                tracing::warn!("standard input closed (the parent is gone): stopping");
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown_signal() => {}
        () = orphaned => {}
    }
}

/// Resolves on SIGTERM (what Docker and Nomad send) or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
