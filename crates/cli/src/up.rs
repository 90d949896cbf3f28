//! `slotbox up`: the slot pool daemon.
//!
//! Settings: command line > environment > configuration file (`[up]`) > default.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::ValueEnum;
use futures_util::StreamExt;
use slotbox_pool::Autoscale;
use slotbox_pool::DockerConfig;
use slotbox_pool::DockerScheduler;
use slotbox_pool::LocalConfig;
use slotbox_pool::LocalScheduler;
use slotbox_pool::NomadConfig;
use slotbox_pool::NomadDriver;
use slotbox_pool::NomadScheduler;
use slotbox_pool::Pool;
use slotbox_pool::Scheduler;

use crate::ExitStatus;
use crate::config;
use crate::config::UpFile;
use crate::env_vars;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SchedulerName {
    /// `slotbox serve` child processes on this host (the default).
    Local,
    /// Containers on a Docker Engine, from the image scripts/build-image.sh builds.
    Docker,
    /// Allocations of a Nomad service job.
    Nomad,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Configuration file (TOML, table `[up]`; see docs/config.md).
    #[arg(long, env = env_vars::SLOTBOX_CONFIG)]
    config: Option<PathBuf>,
    /// Where sandbox servers come from [default: local].
    #[arg(long, value_enum)]
    scheduler: Option<SchedulerName>,
    /// Servers kept at all times [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    min: Option<u32>,
    /// Autoscaling ceiling: servers are added while acquires keep waiting [default: min].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max: Option<u32>,
    /// Slots per sandbox server [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    slots_per_server: Option<u32>,
    /// Address to bind; anything but loopback requires --token [default: 127.0.0.1].
    #[arg(long)]
    host: Option<IpAddr>,
    /// Port to bind (0: any free port; the chosen address is printed) [default: 8090].
    #[arg(long)]
    port: Option<u16>,
    /// Bearer token required on every route but /v1/health.
    #[arg(long, env = env_vars::SLOTBOX_TOKEN, hide_env_values = true)]
    token: Option<String>,
    /// docker: the sandbox-server image [default: slotbox-sandbox:latest].
    #[arg(long)]
    image: Option<String>,
    /// docker: this pool's name; its containers carry it, and leftovers of a crashed pool of
    /// the same name are removed at start [default: default].
    #[arg(long)]
    pool_name: Option<String>,
    /// nomad: the Nomad HTTP API [default: http://127.0.0.1:4646].
    #[arg(long, env = env_vars::NOMAD_ADDR)]
    nomad_addr: Option<String>,
    /// Arguments passed to every `slotbox serve` (e.g. `--pids 512`), after `--`.
    #[arg(last = true)]
    serve_args: Vec<String>,
}

/// Every setting of `slotbox up`, resolved.
#[derive(Debug)]
struct Settings {
    scheduler: SchedulerName,
    autoscale: Autoscale,
    host: IpAddr,
    port: u16,
    token: Option<String>,
    serve_args: Vec<String>,
}

fn seconds(value: Option<f64>, default: Duration, name: &str) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(secs) => Duration::try_from_secs_f64(secs)
            .with_context(|| format!("[up.autoscale] {name} must be a non-negative number")),
    }
}

fn resolve(args: &UpArgs, file: &UpFile) -> anyhow::Result<Settings> {
    let scheduler = match (args.scheduler, file.scheduler.as_deref()) {
        (Some(name), _) => name,
        (None, Some(name)) => SchedulerName::from_str(name, true).map_err(|_| {
            anyhow::anyhow!("[up] scheduler = {name:?}: expected local, docker or nomad")
        })?,
        (None, None) => SchedulerName::Local,
    };
    let min = args.min.or(file.min).unwrap_or(1) as usize;
    let max = args.max.or(file.max).map_or(min, |max| max as usize);
    if max < min {
        anyhow::bail!("--max ({max}) is below --min ({min})");
    }
    let slots_per_server = args
        .slots_per_server
        .or(file.slots_per_server)
        .unwrap_or(10) as usize;
    if slots_per_server == 0 || min == 0 {
        anyhow::bail!("min and slots_per_server must be at least 1");
    }
    let auto = &file.autoscale;
    let autoscale = Autoscale {
        min,
        max,
        slots_per_server,
        up_after: seconds(
            auto.scale_up_after_s,
            Duration::from_secs(2),
            "scale_up_after_s",
        )?,
        idle_after: seconds(auto.idle_after_s, Duration::from_secs(120), "idle_after_s")?,
        cooldown: seconds(auto.cooldown_s, Duration::from_secs(10), "cooldown_s")?,
        max_starting: auto.max_starting.unwrap_or(4).max(1) as usize,
        period: Duration::from_millis(500),
    };
    let serve_args = if args.serve_args.is_empty() {
        file.serve_args.clone().unwrap_or_default()
    } else {
        args.serve_args.clone()
    };
    Ok(Settings {
        scheduler,
        autoscale,
        host: args
            .host
            .or(file.host)
            .unwrap_or(IpAddr::from([127, 0, 0, 1])),
        port: args.port.or(file.port).unwrap_or(8090),
        token: args.token.clone(),
        serve_args,
    })
}

fn scheduler(
    settings: &Settings,
    args: &UpArgs,
    file: &UpFile,
) -> anyhow::Result<Arc<dyn Scheduler>> {
    let slots_per_server = settings.autoscale.slots_per_server;
    let serve_args = settings.serve_args.clone();
    Ok(match settings.scheduler {
        SchedulerName::Local => {
            let binary = std::env::current_exe().context("locating the slotbox binary")?;
            Arc::new(LocalScheduler::new(LocalConfig {
                binary,
                slots_per_server,
                serve_args,
            })?)
        }
        SchedulerName::Docker => {
            let docker = &file.docker;
            let mut config = DockerConfig::new(slots_per_server);
            if let Some(image) = args.image.clone().or_else(|| docker.image.clone()) {
                config.image = image;
            }
            if let Some(name) = args.pool_name.clone().or_else(|| docker.pool_name.clone()) {
                config.pool_name = name;
            }
            if let Some(ip) = docker.publish_ip.clone() {
                config.publish_ip = ip;
            }
            config.serve_args = serve_args;
            config.memory_bytes = docker
                .container_memory_mb
                .map(|mb| i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX));
            config.pids = docker
                .container_pids
                .map(|pids| i64::try_from(pids).unwrap_or(i64::MAX));
            #[allow(clippy::cast_possible_truncation)]
            {
                config.nano_cpus = docker
                    .container_cpus
                    .filter(|cpus| cpus.is_finite() && *cpus > 0.0)
                    .map(|cpus| (cpus * 1e9).min(i64::MAX as f64) as i64);
            }
            Arc::new(DockerScheduler::new(config))
        }
        SchedulerName::Nomad => {
            let nomad = &file.nomad;
            let address = args
                .nomad_addr
                .clone()
                .or_else(|| nomad.address.clone())
                .unwrap_or_else(|| "http://127.0.0.1:4646".to_owned());
            let driver = match nomad.driver.as_deref().unwrap_or("raw_exec") {
                "raw_exec" => NomadDriver::RawExec {
                    binary: nomad
                        .binary
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/slotbox")),
                },
                "docker" => NomadDriver::Docker {
                    image: nomad
                        .image
                        .clone()
                        .unwrap_or_else(|| "slotbox-sandbox:latest".to_owned()),
                },
                other => {
                    anyhow::bail!("[up.nomad] driver = {other:?}: expected raw_exec or docker")
                }
            };
            let mut config = NomadConfig::new(address, driver, slots_per_server);
            config.token = std::env::var(env_vars::NOMAD_TOKEN)
                .ok()
                .or_else(|| nomad.token.clone());
            config.namespace = std::env::var(env_vars::NOMAD_NAMESPACE)
                .ok()
                .or_else(|| nomad.namespace.clone());
            config.region = std::env::var(env_vars::NOMAD_REGION)
                .ok()
                .or_else(|| nomad.region.clone());
            if let Some(job) = nomad.job_id.clone() {
                config.job_id = job;
            }
            if let Some(datacenters) = nomad.datacenters.clone() {
                config.datacenters = datacenters;
            }
            if let Some(cpu) = nomad.cpu_mhz {
                config.cpu_mhz = cpu;
            }
            if let Some(memory) = nomad.memory_mb {
                config.memory_mb = memory;
            }
            config.serve_args = serve_args;
            Arc::new(NomadScheduler::new(config)?)
        }
    })
}

/// Prepares the scheduler and starts `count` servers, `at_once` at a time (no start storm).
pub(crate) async fn start_servers(pool: &Pool, count: usize, at_once: usize) -> anyhow::Result<()> {
    pool.prepare().await.context("preparing the scheduler")?;
    let started: Vec<_> = futures_util::stream::iter(0..count)
        .map(|_| pool.add_server())
        .buffer_unordered(at_once.max(1))
        .collect()
        .await;
    match started.into_iter().find(Result::is_err) {
        Some(Err(error)) => Err(error).context("starting a sandbox server"),
        _ => Ok(()),
    }
}

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<ExitStatus> {
    let file = config::load(args.config.as_deref())?.up;
    let settings = resolve(&args, &file)?;
    if !settings.host.is_loopback() && settings.token.is_none() {
        anyhow::bail!(
            "refusing to listen on {} without a token; pass --token (or {}) or bind 127.0.0.1",
            settings.host,
            env_vars::SLOTBOX_TOKEN
        );
    }
    let scheduler = scheduler(&settings, &args, &file)?;
    let pool = Pool::new(scheduler, None);
    slotbox_pool::start_background(&pool);
    // Listening for SIGTERM/SIGINT from here: a stop during the (possibly long) start-up must
    // stop what was started, not leave it behind.
    let mut signal = Box::pin(crate::serve::shutdown_signal());
    // The first `min` servers before the pool listens.
    let startup = start_servers(
        &pool,
        settings.autoscale.min,
        settings.autoscale.max_starting,
    );
    tokio::select! {
        started = startup => {
            if let Err(error) = started {
                pool.shutdown().await;
                return Err(error);
            }
        }
        () = &mut signal => {
            tracing::info!("stopped during start-up: stopping every server");
            pool.shutdown().await;
            return Ok(ExitStatus::Command(0));
        }
    }
    let listener = match tokio::net::TcpListener::bind((settings.host, settings.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            pool.shutdown().await;
            return Err(error)
                .with_context(|| format!("binding {}:{}", settings.host, settings.port));
        }
    };
    let address = listener.local_addr()?;
    print_ready(&address, &pool);

    let autoscaler = tokio::spawn(slotbox_pool::run_autoscaler(
        Arc::clone(&pool),
        settings.autoscale.clone(),
    ));
    // On SIGTERM/SIGINT the servers are stopped at once, so commands in flight are killed and
    // their calls answered, while the HTTP side drains; then nothing of the pool is left.
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let stopper = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move {
            signal.await;
            tracing::info!("shutting down: stopping every server");
            autoscaler.abort();
            let _ = stopping_tx.send(());
            pool.shutdown().await;
        })
    };
    let app = slotbox_pool::router(Arc::clone(&pool), settings.token);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = stopping_rx.await;
        })
        .await
        .context("serving");
    // The stopper finishes the shutdown (also when serving failed: then stop everything here).
    if served.is_err() {
        stopper.abort();
        pool.shutdown().await;
    } else {
        let _ = stopper.await;
    }
    served?;
    Ok(ExitStatus::Command(0))
}

#[allow(clippy::print_stdout)]
fn print_ready(address: &std::net::SocketAddr, pool: &Pool) {
    use std::io::Write;
    let (servers, slots, _) = pool.capacity();
    println!("slotbox up: listening on http://{address} ({servers} servers, {slots} slots)");
    let _ = std::io::stdout().flush();
}
