//! `slotbox up`: the slot pool daemon.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::ValueEnum;
use slotbox_pool::LocalConfig;
use slotbox_pool::LocalScheduler;
use slotbox_pool::Pool;

use crate::ExitStatus;
use crate::env_vars;

/// How often servers are checked for life, besides failed calls (which detect a loss at once).
const SERVER_CHECK_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SchedulerName {
    /// `slotbox serve` child processes on this host.
    Local,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Where sandbox servers come from.
    #[arg(long, value_enum, default_value = "local")]
    scheduler: SchedulerName,
    /// Sandbox servers to run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    min: u32,
    /// Slots per sandbox server.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    slots_per_server: u32,
    /// Address to bind; anything but loopback requires --token.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to bind (0: any free port; the chosen address is printed).
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// Bearer token required on every route but /v1/health.
    #[arg(long, env = env_vars::SLOTBOX_TOKEN, hide_env_values = true)]
    token: Option<String>,
    /// Arguments passed to every `slotbox serve` (e.g. `--pids 512`), after `--`.
    #[arg(last = true)]
    serve_args: Vec<String>,
}

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<ExitStatus> {
    if !args.host.is_loopback() && args.token.is_none() {
        anyhow::bail!(
            "refusing to listen on {} without a token; pass --token (or {}) or bind 127.0.0.1",
            args.host,
            env_vars::SLOTBOX_TOKEN
        );
    }
    let SchedulerName::Local = args.scheduler;
    let binary = std::env::current_exe().context("locating the slotbox binary")?;
    let scheduler = Arc::new(LocalScheduler::new(LocalConfig {
        binary,
        slots_per_server: args.slots_per_server as usize,
        serve_args: args.serve_args,
    })?);
    let pool = Pool::new(scheduler, None);
    slotbox_pool::start_background(&pool);
    let target = args.min as usize;
    for _ in 0..target {
        pool.add_server()
            .await
            .context("starting a sandbox server")?;
    }
    let listener = tokio::net::TcpListener::bind((args.host, args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;
    print_ready(&address, &pool);

    let watcher = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(SERVER_CHECK_INTERVAL);
            loop {
                interval.tick().await;
                pool.check_servers().await;
                // Lost servers (found here or by a failed call) are replaced up to the target.
                if pool.capacity().0 < target {
                    pool.replace_lost(target).await;
                }
            }
        })
    };
    let app = slotbox_pool::router(Arc::clone(&pool), args.token);
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::serve::shutdown_signal())
        .await
        .context("serving")?;
    watcher.abort();
    pool.shutdown().await;
    Ok(ExitStatus::Command(0))
}

#[allow(clippy::print_stdout)]
fn print_ready(address: &std::net::SocketAddr, pool: &Pool) {
    use std::io::Write;
    let (servers, slots, _) = pool.capacity();
    println!("slotbox up: listening on http://{address} ({servers} servers, {slots} slots)");
    let _ = std::io::stdout().flush();
}
