//! `slotbox bench rollout`: many concurrent rollouts against the fake model, measuring what the
//! engine itself adds per turn.
//!
//! The fake model (`slotbox-fake-openai`, not a model) answers every request after a fixed
//! latency with one terminal call, so each rollout is `--turns` turns of model + `echo` in its
//! own bwrap slot. Per turn the engine records wall time, model-request time and tool time; the
//! engine overhead is the rest. Floors measured in the same run: bare `bash -c true`, one exec
//! through the pool with nothing else running, and one fake-model request with nothing else
//! running. Every request is also checked by the fake for protocol breaches.

#![allow(clippy::print_stdout)]

use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use slotbox_fake_openai::FakeConfig;
use slotbox_fake_openai::FakeModel;
use slotbox_fake_openai::Reply;
use slotbox_protocol::v1::CreateLease;
use slotbox_protocol::v1::ExecBody;
use slotbox_rollout::agent::CallFormat;
use slotbox_rollout::agent::LoopSettings;
use slotbox_rollout::agent::Termination;
use slotbox_rollout::budget::RetryPolicy;
use slotbox_rollout::engine::RunSettings;
use slotbox_rollout::engine::Silent;
use slotbox_rollout::model::ModelClient;
use slotbox_rollout::model::ModelSettings;
use slotbox_rollout::output::Sink;
use slotbox_rollout::rollout::RolloutSettings;
use slotbox_rollout::task::Task;
use tokio_util::sync::CancellationToken;

use crate::ExitStatus;
use crate::rollout::EmbeddedPool;

#[derive(Debug, Args)]
pub(crate) struct BenchRolloutArgs {
    /// Concurrent rollouts (one per task).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rollouts: u64,
    /// Turns per rollout, each with one terminal call.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    turns: u32,
    /// The fake model's answer latency in milliseconds.
    #[arg(long, default_value_t = 20)]
    model_latency_ms: u64,
    /// Slots per sandbox server of the embedded pool.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1000))]
    slots_per_server: u64,
    /// Sequential rounds of each floor.
    #[arg(long, default_value_t = 100)]
    floor_iterations: usize,
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (samples.len() as f64 - 1.0)).round() as usize;
    samples.get(rank).copied().unwrap_or_default()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

pub(crate) async fn run(args: BenchRolloutArgs) -> anyhow::Result<ExitStatus> {
    anyhow::ensure!(args.rollouts > 0 && args.turns > 0, "nothing to run");
    println!(
        "slotbox bench rollout: {} concurrent rollouts x {} turns, fake model at {} ms, bwrap slots, 2 cores",
        args.rollouts, args.turns, args.model_latency_ms
    );
    let fake = FakeModel::start(
        FakeConfig {
            latency: Duration::from_millis(args.model_latency_ms),
            expect_model: Some("bench".to_owned()),
            ..FakeConfig::default()
        },
        |request| Reply::terminal(&format!("call_{}", request.turn), "echo turn"),
    )
    .await?;
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let servers = args.rollouts.div_ceil(args.slots_per_server) as usize;
    let pool = EmbeddedPool::start(servers, args.slots_per_server as usize, &cancel)
        .await?
        .context("cancelled")?;
    println!(
        "pool: {servers} servers x {} slots started in {:.1} s",
        args.slots_per_server,
        started.elapsed().as_secs_f64()
    );
    let result = measure(&args, &fake, &pool).await;
    pool.stop().await;
    result?;
    Ok(ExitStatus::Command(0))
}

async fn measure(
    args: &BenchRolloutArgs,
    fake: &FakeModel,
    pool: &EmbeddedPool,
) -> anyhow::Result<()> {
    // Floors, sequential, nothing else running.
    let mut bash = Vec::new();
    for _ in 0..args.floor_iterations {
        let started = Instant::now();
        crate::bench_serve::floor_call().await?;
        bash.push(ms(started.elapsed()));
    }
    let client = pool.client.clone();
    let lease = client.lease(&CreateLease::default()).await?;
    let mut exec = Vec::new();
    for _ in 0..args.floor_iterations {
        let started = Instant::now();
        client
            .exec(&lease.lease_id, &ExecBody::new("echo turn"))
            .await?;
        exec.push(ms(started.elapsed()));
    }
    client.release(&lease.lease_id).await?;
    let model = ModelClient::new(ModelSettings {
        url: fake.url(),
        model: "bench".to_owned(),
        api_key: None,
        temperature: Some(1.0),
        max_tokens: None,
        extra_body: serde_json::Map::new(),
        request_timeout: Duration::from_secs(60),
        retry: RetryPolicy::default(),
    })?;
    let mut request = Vec::new();
    let hello = [slotbox_rollout::message::Message::user("floor")];
    for _ in 0..args.floor_iterations {
        let started = Instant::now();
        model
            .complete(
                &hello,
                None,
                slotbox_rollout::budget::Deadline::after(Duration::from_secs(60)),
            )
            .await
            .map_err(|failed| failed.error)?;
        request.push(ms(started.elapsed()));
    }
    let bash_p50 = percentile(&mut bash, 50.0);
    let exec_p50 = percentile(&mut exec, 50.0);
    let model_p50 = percentile(&mut request, 50.0);
    println!("floor: bare `bash -c true`            p50 {bash_p50:8.3} ms");
    println!("floor: one exec via the pool (idle)   p50 {exec_p50:8.3} ms");
    println!("floor: one fake-model request (idle)  p50 {model_p50:8.3} ms");

    // The run.
    let tasks: Vec<Task> = (0..args.rollouts)
        .map(|index| Task {
            id: format!("bench-{index}"),
            prompt: format!("bench task {index}"),
            system: None,
            setup: Vec::new(),
            verify: Some("true".to_owned()),
            max_turns: None,
            timeout_s: None,
        })
        .collect();
    let directory = tempfile::tempdir()?;
    let out = directory.path().join("trajectories.jsonl");
    let mut sink = Sink::create(&out, &[], 1)?;
    let settings = RunSettings {
        concurrency: args.rollouts as usize,
        samples: 1,
        rollout: RolloutSettings {
            agent: LoopSettings {
                max_turns: args.turns,
                format: CallFormat::Native,
                mode: slotbox_toolcall::Mode::Lenient,
                max_context_tokens: None,
                send_tools: true,
            },
            rollout_timeout: Duration::from_secs(600),
            command_timeout: Duration::from_secs(60),
            setup_timeout: Duration::from_secs(60),
            verify_timeout: Duration::from_secs(60),
            lease_wait: None,
            default_system: None,
        },
    };
    let requests_before = fake.request_count();
    let started = Instant::now();
    // A generous bound: a run that does not end in it is reported as a deadlock.
    let bound = Duration::from_secs(600);
    let report = tokio::time::timeout(
        bound,
        slotbox_rollout::engine::run(
            client,
            model,
            tasks,
            settings,
            &mut sink,
            &Silent,
            CancellationToken::new(),
        ),
    )
    .await
    .map_err(|_| anyhow::anyhow!("DEADLOCK: the run did not finish within {bound:?}"))??;
    let wall = started.elapsed();
    drop(sink);

    let text = std::fs::read_to_string(&out)?;
    let mut overhead = Vec::new();
    let mut turn = Vec::new();
    let mut model_ms = Vec::new();
    let mut tools_ms = Vec::new();
    // A slot's first command also starts its sandbox; later ones reuse it.
    let mut first_tools_ms = Vec::new();
    let mut errors = 0usize;
    let mut lines = 0usize;
    for line in text.lines() {
        let trajectory: slotbox_rollout::rollout::Trajectory = serde_json::from_str(line)?;
        lines += 1;
        let complete = trajectory.termination == Termination::MaxTurns
            && trajectory.turns == args.turns
            && trajectory.metrics.tool_calls_executed_ok == u64::from(args.turns)
            && trajectory.error.is_none()
            && trajectory.reward == Some(1.0);
        if !complete {
            errors += 1;
        }
        for (index, timing) in trajectory.timings.turns.iter().enumerate() {
            overhead.push(timing.overhead_ms());
            turn.push(timing.wall_ms);
            model_ms.push(timing.model_ms);
            if index == 0 {
                first_tools_ms.push(timing.tools_ms);
            } else {
                tools_ms.push(timing.tools_ms);
            }
        }
    }
    let violations = fake.violations();
    let turn_p50 = percentile(&mut turn, 50.0);
    println!(
        "run: {lines} of {} rollouts finished in {:.1} s, {} model requests, {errors} with errors, {} protocol violations",
        args.rollouts,
        wall.as_secs_f64(),
        fake.request_count() - requests_before,
        violations.len()
    );
    println!(
        "turn wall        p50 {turn_p50:8.3} ms  p99 {:8.3} ms  ({:.2}x the idle model + exec floors)",
        percentile(&mut turn, 99.0),
        turn_p50 / (model_p50 + exec_p50)
    );
    println!(
        "  model request  p50 {:8.3} ms  p99 {:8.3} ms",
        percentile(&mut model_ms, 50.0),
        percentile(&mut model_ms, 99.0)
    );
    println!(
        "  terminal call  p50 {:8.3} ms  p99 {:8.3} ms  (first call of a slot, sandbox start: p50 {:.1} ms, p99 {:.1} ms)",
        percentile(&mut tools_ms, 50.0),
        percentile(&mut tools_ms, 99.0),
        percentile(&mut first_tools_ms, 50.0),
        percentile(&mut first_tools_ms, 99.0)
    );
    println!(
        "  engine overhead p50 {:8.3} ms  p99 {:8.3} ms  (target p50 <= 2 ms)",
        percentile(&mut overhead, 50.0),
        percentile(&mut overhead, 99.0)
    );
    println!(
        "throughput: {:.0} rollouts/hour, {:.0} turns/s",
        report.summary.rollouts_per_hour,
        report.summary.turns as f64 / wall.as_secs_f64()
    );
    if let Some(first) = violations.first() {
        println!("first violation: {first}");
    }
    anyhow::ensure!(
        errors == 0 && lines == args.rollouts as usize && violations.is_empty(),
        "the run had errors"
    );
    Ok(())
}
