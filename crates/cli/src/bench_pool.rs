//! `slotbox bench pool`: the slot pool (local scheduler) over loopback: warm lease acquire,
//! exec through the pool against the same exec sent to the server directly, and many clients
//! contending for few slots.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use slotbox_client::Client;
use slotbox_protocol::v1::CreateLease;
use slotbox_protocol::v1::ExecBody;

use crate::ExitStatus;

#[derive(Debug, Args)]
pub(crate) struct BenchPoolArgs {
    /// Measured rounds of the sequential cases.
    #[arg(long, default_value_t = 300)]
    iterations: usize,
    /// Clients of the contention case.
    #[arg(long, default_value_t = 512)]
    clients: usize,
    /// Servers of the contention case (8 slots each).
    #[arg(long, default_value_t = 8)]
    servers: usize,
    /// Where servers come from: local processes or Docker containers.
    #[arg(long, value_enum, default_value = "local")]
    scheduler: BenchScheduler,
    /// The image for `--scheduler docker`.
    #[arg(long, default_value = "slotbox-sandbox:latest")]
    image: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchScheduler {
    Local,
    Docker,
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((p / 100.0) * (samples.len() as f64 - 1.0)).round() as usize;
    samples.get(rank).copied().unwrap_or_default()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

async fn start_pool(
    args: &BenchPoolArgs,
    servers: usize,
    slots: usize,
) -> anyhow::Result<(Arc<slotbox_pool::Pool>, Client, Vec<Duration>)> {
    let scheduler: Arc<dyn slotbox_pool::Scheduler> = match args.scheduler {
        BenchScheduler::Local => Arc::new(slotbox_pool::LocalScheduler::new(
            slotbox_pool::LocalConfig {
                binary: std::env::current_exe()?,
                slots_per_server: slots,
                serve_args: Vec::new(),
            },
        )?),
        BenchScheduler::Docker => {
            let mut config = slotbox_pool::DockerConfig::new(slots);
            config.image = args.image.clone();
            config.pool_name = format!("bench-{}", std::process::id());
            Arc::new(slotbox_pool::DockerScheduler::new(config))
        }
    };
    let pool = slotbox_pool::Pool::new(scheduler, None);
    slotbox_pool::start_background(&pool);
    pool.prepare().await.context("preparing the scheduler")?;
    // Cold server starts, one at a time: from the request to a server whose slots are usable.
    let mut starts = Vec::new();
    for _ in 0..servers {
        let started = Instant::now();
        pool.add_server().await.context("starting a server")?;
        starts.push(started.elapsed());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = slotbox_pool::router(Arc::clone(&pool), None);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((pool, Client::new(format!("http://{address}")), starts))
}

pub(crate) async fn run(args: BenchPoolArgs) -> anyhow::Result<ExitStatus> {
    let scheduler = match args.scheduler {
        BenchScheduler::Local => "local",
        BenchScheduler::Docker => "docker",
    };
    println!("slotbox bench pool: {scheduler} scheduler, bwrap isolation, loopback, 2 cores");
    let (pool, client, _) = start_pool(&args, 1, 4).await?;
    // Warm acquire: lease and release, the lease timed alone.
    let mut acquire = Vec::new();
    for round in 0..args.iterations + 20 {
        let started = Instant::now();
        let lease = client.lease(&CreateLease::default()).await?;
        let elapsed = started.elapsed();
        client.release(&lease.lease_id).await?;
        if round >= 20 {
            acquire.push(elapsed);
        }
    }
    println!(
        "warm lease acquire through the pool: p50 {:.3} ms, p99 {:.3} ms (targets 5 / 20 ms)",
        ms(percentile(&mut acquire, 50.0)),
        ms(percentile(&mut acquire, 99.0))
    );
    // Exec through the pool against the server directly, interleaved.
    let server = pool
        .server_handles()
        .into_iter()
        .next()
        .context("no server")?;
    let mut direct = Client::new(server.base_url);
    if let Some(token) = server.token {
        direct = direct.with_token(token);
    }
    let pooled_lease = client.lease(&CreateLease::default()).await?;
    let direct_lease = direct.lease(&CreateLease::default()).await?;
    let body = ExecBody::new("echo hi");
    let (mut via_pool, mut via_server) = (Vec::new(), Vec::new());
    for round in 0..args.iterations + 20 {
        let started = Instant::now();
        client.exec(&pooled_lease.lease_id, &body).await?;
        let pool_time = started.elapsed();
        let started = Instant::now();
        direct.exec(&direct_lease.lease_id, &body).await?;
        let server_time = started.elapsed();
        if round >= 20 {
            via_pool.push(pool_time);
            via_server.push(server_time);
        }
    }
    let pool_p50 = percentile(&mut via_pool, 50.0);
    let server_p50 = percentile(&mut via_server, 50.0);
    println!(
        "exec `echo hi`: through the pool p50 {:.3} ms, directly p50 {:.3} ms, ratio {:.2}x (target <= 1.2x)",
        ms(pool_p50),
        ms(server_p50),
        pool_p50.as_secs_f64() / server_p50.as_secs_f64()
    );
    pool.shutdown().await;

    // Contention: many clients, each lease -> 5 execs -> release, on servers x 8 slots.
    let (pool, client, mut starts) = start_pool(&args, args.servers, 8).await?;
    println!(
        "cold server start (8 slots, until usable): p50 {:.0} ms, max {:.0} ms over {} servers",
        ms(percentile(&mut starts, 50.0)),
        ms(percentile(&mut starts, 100.0)),
        starts.len()
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let client = client.clone();
        tasks.spawn(async move {
            let asked = Instant::now();
            let lease = client
                .lease(&CreateLease {
                    wait_s: Some(600.0),
                    ..CreateLease::default()
                })
                .await?;
            let waited = asked.elapsed();
            for _ in 0..5 {
                let result = client
                    .exec(&lease.lease_id, &ExecBody::new("echo hi"))
                    .await?;
                anyhow::ensure!(result.exit_code == 0, "exec failed: {result:?}");
            }
            client.release(&lease.lease_id).await?;
            anyhow::Ok(waited)
        });
    }
    let (mut waits, mut errors) = (Vec::new(), 0usize);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(waited)) => waits.push(waited),
            Ok(Err(error)) => {
                errors += 1;
                println!("client error: {error:#}");
            }
            Err(error) => {
                errors += 1;
                println!("client task failed: {error}");
            }
        }
    }
    let total = started.elapsed();
    println!(
        "{} clients x (lease, 5 execs, release) on {} slots: {:.1} s, {} errors; lease wait p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        args.clients,
        args.servers * 8,
        total.as_secs_f64(),
        errors,
        ms(percentile(&mut waits, 50.0)),
        ms(percentile(&mut waits, 99.0)),
        ms(percentile(&mut waits, 100.0)),
    );
    pool.shutdown().await;
    Ok(ExitStatus::Command(0))
}
