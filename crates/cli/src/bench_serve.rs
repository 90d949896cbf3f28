//! `slotbox bench serve`: the sandbox server measured over loopback HTTP against the bare
//! `bash -c true` floor, taken in the same run.
//!
//! The server runs as a child process (`slotbox serve`, bwrap isolation, long-lived slot
//! sandboxes), so its memory is measured alone (`VmHWM`, `VmRSS` of the child).

#![allow(clippy::print_stdout)]

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use serde_json::json;

use crate::ExitStatus;

#[derive(Debug, Args)]
pub(crate) struct BenchServeArgs {
    /// Measured calls per sequential case.
    #[arg(long, default_value_t = 300)]
    iterations: usize,
    /// Calls per client in the concurrent case (10 clients, one slot each).
    #[arg(long, default_value_t = 100)]
    concurrent_calls: usize,
    /// Bytes printed by the large-output case.
    #[arg(long, default_value_t = 300_000_000)]
    large_output_bytes: u64,
    /// Slots of the idle-memory case.
    #[arg(long, default_value_t = 1000)]
    idle_slots: u32,
}

/// A `slotbox serve` child process.
struct Server {
    child: std::process::Child,
    base: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start(slots: u32) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new()
            .prefix("slotbox-bench-serve-")
            .tempdir()?;
        let exe = std::env::current_exe()?;
        let mut child = std::process::Command::new(exe)
            .args([
                "serve",
                "--port",
                "0",
                "--slots",
                &slots.to_string(),
                "--data-dir",
            ])
            .arg(data.path().join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting slotbox serve")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("server stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let address = line
            .trim()
            .strip_prefix("slotbox serve: listening on ")
            .with_context(|| format!("unexpected server output: {line:?}"))?
            .to_owned();
        Ok(Self {
            child,
            base: address,
            _data: data,
        })
    }

    /// (VmRSS, VmHWM) of the server in MiB.
    fn memory(&self) -> anyhow::Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    let response = client.post(&url).json(&body).send().await?;
    let status = response.status();
    let value: Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status} {value}");
    Ok(value)
}

async fn lease(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let reply = post(client, format!("{base}/v1/leases"), json!({})).await?;
    reply["lease_id"]
        .as_str()
        .map(str::to_owned)
        .context("lease without an id")
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((p / 100.0) * (samples.len() as f64 - 1.0)).round() as usize;
    samples.get(rank).copied().unwrap_or_default()
}

pub(crate) async fn floor_call() -> anyhow::Result<()> {
    let status = tokio::process::Command::new("bash")
        .args(["-c", "true"])
        .env_clear()
        .env("PATH", slotbox_exec::DEFAULT_PATH)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .output()
        .await?;
    anyhow::ensure!(status.status.success(), "bash -c true failed");
    Ok(())
}

pub(crate) async fn run(args: BenchServeArgs) -> anyhow::Result<ExitStatus> {
    let server = Server::start(10)?;
    let base = server.base.clone();
    let client = reqwest::Client::new();
    println!(
        "slotbox bench serve: {} sequential calls per case (interleaved with the floor), 2 cores, server as a child process",
        args.iterations
    );

    // Sequential: v1 exec and v0 /execute, each interleaved with the floor.
    let lease_id = lease(&client, &base).await?;
    let exec_url = format!("{base}/v1/leases/{lease_id}/exec");
    let execute_url = format!("{base}/execute");
    let (mut floor, mut v1, mut v0) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.iterations + 20 {
        let measured = round >= 20;
        let started = Instant::now();
        floor_call().await?;
        let floor_time = started.elapsed();
        let started = Instant::now();
        let result = post(&client, exec_url.clone(), json!({"command": "echo hi"})).await?;
        let v1_time = started.elapsed();
        anyhow::ensure!(result["output"] == "hi\n", "v1 exec: {result}");
        let started = Instant::now();
        let result = post(
            &client,
            execute_url.clone(),
            json!({"slot_id": "slot_9", "tool": "bash", "args": {"command": "echo hi"}}),
        )
        .await?;
        let v0_time = started.elapsed();
        anyhow::ensure!(result["output"] == "hi\n", "v0 execute: {result}");
        if measured {
            floor.push(floor_time);
            v1.push(v1_time);
            v0.push(v0_time);
        }
    }
    let floor_p50 = percentile(&mut floor, 50.0);
    println!(
        "{:<46} {:>10} {:>10} {:>10}",
        "case", "p50", "p99", "p50/floor"
    );
    let row = |name: &str, samples: &mut Vec<Duration>| {
        let p50 = percentile(samples, 50.0);
        let p99 = percentile(samples, 99.0);
        let ratio = p50.as_secs_f64() / floor_p50.as_secs_f64();
        println!(
            "{:<46} {:>8.3}ms {:>8.3}ms {:>9.2}x",
            name,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            ratio
        );
        ratio
    };
    row("floor: bare `bash -c true`", &mut floor.clone());
    let v1_ratio = row("v1 exec `echo hi` (sandboxed, HTTP)", &mut v1);
    let v0_ratio = row("v0 /execute bash `echo hi` (sandboxed, HTTP)", &mut v0);

    // Concurrent: 10 clients, one lease (slot) each, against the floor's spawn rate with the
    // same concurrency.
    let clients = 10usize;
    let started = Instant::now();
    let mut spawners = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let calls = args.concurrent_calls;
        spawners.spawn(async move {
            for _ in 0..calls {
                floor_call().await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = spawners.join_next().await {
        done??;
    }
    let floor_rate = (clients * args.concurrent_calls) as f64 / started.elapsed().as_secs_f64();
    let mut leases = Vec::new();
    for _ in 0..clients - 1 {
        leases.push(lease(&client, &base).await?);
    }
    leases.push(lease_id.clone());
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for lease_id in leases {
        let client = client.clone();
        let url = format!("{base}/v1/leases/{lease_id}/exec");
        let calls = args.concurrent_calls;
        workers.spawn(async move {
            for _ in 0..calls {
                post(&client, url.clone(), json!({"command": "echo hi"})).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let rate = (clients * args.concurrent_calls) as f64 / started.elapsed().as_secs_f64();
    println!(
        "10 slots concurrently: {rate:.0} calls/s vs floor spawn rate {floor_rate:.0}/s = {:.0} %",
        100.0 * rate / floor_rate
    );

    // Large output: the server must stream and cap, not buffer.
    let (_, hwm_before) = server.memory()?;
    let command = format!(
        "head -c {} /dev/zero | tr '\\0' 'a'",
        args.large_output_bytes
    );
    let result = post(
        &client,
        exec_url.clone(),
        json!({"command": command, "timeout_s": 600}),
    )
    .await?;
    anyhow::ensure!(result["truncated"] == true, "large output: {result}");
    let (rss, hwm) = server.memory()?;
    println!(
        "{} MB of output: server peak RSS {hwm:.1} MiB (before: {hwm_before:.1} MiB, now {rss:.1} MiB)",
        args.large_output_bytes / 1_000_000
    );
    drop(server);

    let idle = Server::start(args.idle_slots)?;
    // Health answered means every slot is prepared.
    let health: Value = client
        .get(format!("{}/v1/health", idle.base))
        .send()
        .await?
        .json()
        .await?;
    let (idle_rss, _) = idle.memory()?;
    println!(
        "{} idle slots: server RSS {idle_rss:.1} MiB ({} slots reported)",
        args.idle_slots, health["slots"]
    );

    let targets = [
        ("v1 exec p50 <= 2x floor", v1_ratio <= 2.0),
        ("v0 execute p50 <= 2x floor", v0_ratio <= 2.0),
        (
            "10-slot throughput >= 60 % of floor",
            rate >= 0.6 * floor_rate,
        ),
        ("large output peak RSS < 64 MiB", hwm < 64.0),
        ("idle slots RSS < 64 MiB", idle_rss < 64.0),
    ];
    for (name, met) in targets {
        println!("target {}: {name}", if met { "met" } else { "MISSED" });
    }
    Ok(ExitStatus::Command(0))
}
