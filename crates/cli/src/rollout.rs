//! `slotbox rollout`: run a tasks file through the agent loop, each rollout in a leased slot.
//!
//! Slots come from `--pool URL` (a `slotbox up` or `slotbox serve`), or from a pool started in
//! this process for the run (local scheduler, bubblewrap isolation; sized to `--concurrency`)
//! and stopped when it ends. Ctrl-C (or SIGTERM) stops new rollouts, makes running ones release
//! their slots, writes what finished and prints the summary; the exit code is then 130.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::ValueEnum;
use slotbox_client::Client;
use slotbox_rollout::agent::CallFormat;
use slotbox_rollout::agent::LoopSettings;
use slotbox_rollout::budget::RetryPolicy;
use slotbox_rollout::engine::Progress;
use slotbox_rollout::engine::RunSettings;
use slotbox_rollout::model::ModelClient;
use slotbox_rollout::model::ModelSettings;
use slotbox_rollout::output::Format;
use slotbox_rollout::output::Sink;
use slotbox_rollout::rollout::RolloutSettings;
use slotbox_rollout::rollout::Trajectory;
use slotbox_toolcall::Mode;
use tokio_util::sync::CancellationToken;

use crate::ExitStatus;
use crate::config;
use crate::config::RolloutFile;
use crate::env_vars;

/// Extra output shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FormatArg {
    /// Hermes ShareGPT (`<out stem>.sharegpt.jsonl`).
    Sharegpt,
    /// Atropos scored-data groups (`<out stem>.atropos.jsonl`).
    Atropos,
}

#[derive(Debug, Args)]
pub(crate) struct RolloutArgs {
    /// Tasks, one JSON object per line: {"id", "prompt", "system"?, "setup"?, "verify"?,
    /// "max_turns"?, "timeout_s"?}.
    #[arg(long)]
    tasks: PathBuf,
    /// Configuration file (TOML, table `[rollout]`; see docs/config.md).
    #[arg(long, env = env_vars::SLOTBOX_CONFIG)]
    config: Option<PathBuf>,
    /// The model server's OpenAI base URL (e.g. http://127.0.0.1:8000/v1).
    #[arg(long, env = env_vars::SLOTBOX_MODEL_URL)]
    model_url: Option<String>,
    /// The model name sent in each request.
    #[arg(long, env = env_vars::SLOTBOX_MODEL)]
    model: Option<String>,
    /// Name of the environment variable holding the API key (sent as a bearer token).
    #[arg(long)]
    api_key_env: Option<String>,
    /// A slot pool or sandbox server (v1 API) to lease from; default: a local pool started for
    /// the run (bubblewrap isolation).
    #[arg(long, env = env_vars::SLOTBOX_POOL_URL)]
    pool: Option<String>,
    /// Bearer token of `--pool`.
    #[arg(long, env = env_vars::SLOTBOX_TOKEN, hide_env_values = true)]
    pool_token: Option<String>,
    /// Rollouts in flight at once [default: 32].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: Option<u32>,
    /// Rollouts per task (an RL group) [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    samples: Option<u32>,
    /// Model turns per rollout (a task's max_turns wins) [default: 30].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_turns: Option<u32>,
    /// How tool calls arrive: `native` (the server's tool_calls) or a text parser (hermes, qwen,
    /// llama3_json, mistral, deepseek_v3, kimi_k2, glm45, qwen3_coder, … ; see docs/rollout.md)
    /// [default: native].
    #[arg(long)]
    parser: Option<String>,
    /// Parse text tool calls exactly as the reference does (all-or-nothing) instead of leniently
    /// (`--strict-parsing=false` overrides the configuration file).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    strict_parsing: Option<bool>,
    /// Send the `tools` array even with a text parser (default: only with `native`; text
    /// parsers get the tools in the system prompt).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    send_tools: Option<bool>,
    /// Context budget in estimated tokens: no request is sent over it.
    #[arg(long)]
    max_context_tokens: Option<u64>,
    /// Completion tokens per turn (`max_tokens`).
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Sampling temperature [default: 1.0].
    #[arg(long)]
    temperature: Option<f64>,
    /// Extra request fields, a JSON object (e.g. '{"top_p": 0.95}').
    #[arg(long)]
    extra_body: Option<String>,
    /// System message for tasks without one.
    #[arg(long)]
    system: Option<String>,
    /// Where trajectories go (JSONL, one line per finished rollout).
    #[arg(long)]
    out: PathBuf,
    /// Also write these shapes beside --out (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    format: Vec<FormatArg>,
    /// The summary as JSON, to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Seconds one terminal command may run [default: 120].
    #[arg(long)]
    command_timeout_s: Option<f64>,
    /// Seconds a rollout (setup and loop) may take (a task's timeout_s wins) [default: 1800].
    #[arg(long)]
    rollout_timeout_s: Option<f64>,
    /// Seconds each setup command may run [default: 300].
    #[arg(long)]
    setup_timeout_s: Option<f64>,
    /// Seconds the verifier may run [default: 300].
    #[arg(long)]
    verify_timeout_s: Option<f64>,
    /// Seconds one model request may take [default: 600].
    #[arg(long)]
    request_timeout_s: Option<f64>,
    /// Retries of a failed model request (429, 5xx, broken connection) [default: 6].
    #[arg(long)]
    retries: Option<u32>,
    /// First retry backoff in milliseconds (doubles per retry, jittered, capped at 30 s)
    /// [default: 500].
    #[arg(long)]
    backoff_ms: Option<u64>,
    /// Embedded pool: slots per sandbox server [default: 16].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    slots_per_server: Option<u32>,
}

/// Run-shape settings of `slotbox rollout`, resolved.
#[derive(Debug)]
struct Resolved {
    concurrency: usize,
    samples: u32,
    slots_per_server: usize,
}

fn seconds(value: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|duration| !duration.is_zero())
        .with_context(|| {
            format!(
                "{name} (--{name} or [rollout] {}) must be a positive number of seconds, got {value}",
                name.replace('-', "_")
            )
        })
}

/// The progress bar (drawn only when stderr is a terminal).
struct Bar {
    bar: indicatif::ProgressBar,
    passed: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

impl Progress for Bar {
    fn finished(&self, trajectory: &Trajectory) {
        use std::sync::atomic::Ordering;
        if trajectory.reward.is_some_and(|reward| reward >= 1.0) {
            self.passed.fetch_add(1, Ordering::Relaxed);
        }
        if trajectory.error.is_some() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.bar.set_message(format!(
            "passed {} · errors {}",
            self.passed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        ));
        self.bar.inc(1);
    }
}

/// The flags' ranges hold for values from the configuration file too.
fn in_range(value: u32, range: std::ops::RangeInclusive<u32>, name: &str) -> anyhow::Result<u32> {
    anyhow::ensure!(
        range.contains(&value),
        "{name} (--{name} or [rollout] {}) must be in {}..={}, got {value}",
        name.replace('-', "_"),
        range.start(),
        range.end()
    );
    Ok(value)
}

fn seconds_setting(
    arg: Option<f64>,
    file: Option<f64>,
    default: f64,
    name: &str,
) -> anyhow::Result<Duration> {
    seconds(arg.or(file).unwrap_or(default), name)
}

/// Command line > environment > `[rollout]` > default.
fn settings(
    args: &RolloutArgs,
    file: &RolloutFile,
) -> anyhow::Result<(ModelSettings, RunSettings, Resolved)> {
    let url = args
        .model_url
        .clone()
        .or_else(|| file.model_url.clone())
        .with_context(|| {
            format!(
                "no model server: pass --model-url (or {}, or [rollout] model_url)",
                env_vars::SLOTBOX_MODEL_URL
            )
        })?;
    let model_name = args
        .model
        .clone()
        .or_else(|| file.model.clone())
        .with_context(|| {
            format!(
                "no model name: pass --model (or {}, or [rollout] model)",
                env_vars::SLOTBOX_MODEL
            )
        })?;
    let api_key = match args.api_key_env.as_ref().or(file.api_key_env.as_ref()) {
        Some(name) => Some(
            std::env::var(name)
                .with_context(|| format!("--api-key-env {name}: the variable is not set"))?,
        ),
        None => None,
    };
    let extra_body = match (&args.extra_body, &file.extra_body) {
        (Some(text), _) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => anyhow::bail!("--extra-body must be a JSON object, got {text:?}"),
        },
        (None, Some(table)) => match serde_json::to_value(table)? {
            serde_json::Value::Object(map) => map,
            _ => anyhow::bail!("[rollout] extra_body must be a table"),
        },
        (None, None) => serde_json::Map::new(),
    };
    let temperature = args.temperature.or(file.temperature).unwrap_or(1.0);
    if !(temperature.is_finite() && temperature >= 0.0) {
        anyhow::bail!("--temperature must be a non-negative number");
    }
    let model = ModelSettings {
        url,
        model: model_name,
        api_key,
        temperature: Some(temperature),
        max_tokens: args.max_tokens.or(file.max_tokens),
        extra_body,
        request_timeout: seconds_setting(
            args.request_timeout_s,
            file.request_timeout_s,
            600.0,
            "request-timeout-s",
        )?,
        retry: RetryPolicy {
            max_retries: args.retries.or(file.retries).unwrap_or(6),
            initial_backoff: Duration::from_millis(
                args.backoff_ms.or(file.backoff_ms).unwrap_or(500),
            ),
            max_backoff: Duration::from_secs(30),
        },
    };
    let parser = args
        .parser
        .clone()
        .or_else(|| file.parser.clone())
        .unwrap_or_else(|| "native".to_owned());
    let format = if parser == "native" {
        CallFormat::Native
    } else {
        CallFormat::Text(
            slotbox_toolcall::parser(&parser)
                .map_err(|error| anyhow::anyhow!("--parser: {error} (or native)"))?,
        )
    };
    let resolved = Resolved {
        concurrency: in_range(
            args.concurrency.or(file.concurrency).unwrap_or(32),
            1..=100_000,
            "concurrency",
        )? as usize,
        samples: in_range(
            args.samples.or(file.samples).unwrap_or(1),
            1..=10_000,
            "samples",
        )?,
        slots_per_server: in_range(
            args.slots_per_server
                .or(file.slots_per_server)
                .unwrap_or(16),
            1..=1000,
            "slots-per-server",
        )? as usize,
    };
    let max_turns = in_range(
        args.max_turns.or(file.max_turns).unwrap_or(30),
        1..=100_000,
        "max-turns",
    )?;
    let rollout_timeout = seconds_setting(
        args.rollout_timeout_s,
        file.rollout_timeout_s,
        1800.0,
        "rollout-timeout-s",
    )?;
    let run = RunSettings {
        concurrency: resolved.concurrency,
        samples: resolved.samples,
        rollout: RolloutSettings {
            agent: LoopSettings {
                max_turns,
                format,
                mode: if args.strict_parsing.or(file.strict_parsing).unwrap_or(false) {
                    Mode::Strict
                } else {
                    Mode::Lenient
                },
                max_context_tokens: args.max_context_tokens.or(file.max_context_tokens),
                send_tools: matches!(format, CallFormat::Native)
                    || args.send_tools.or(file.send_tools).unwrap_or(false),
            },
            rollout_timeout,
            command_timeout: seconds_setting(
                args.command_timeout_s,
                file.command_timeout_s,
                120.0,
                "command-timeout-s",
            )?,
            setup_timeout: seconds_setting(
                args.setup_timeout_s,
                file.setup_timeout_s,
                300.0,
                "setup-timeout-s",
            )?,
            verify_timeout: seconds_setting(
                args.verify_timeout_s,
                file.verify_timeout_s,
                300.0,
                "verify-timeout-s",
            )?,
            // With --concurrency above the pool's slots, rollouts queue for a slot.
            lease_wait: None,
            default_system: args.system.clone().or_else(|| file.system.clone()),
        },
    };
    Ok((model, run, resolved))
}

/// A pool started for this run, listening on loopback with a random token.
pub(crate) struct EmbeddedPool {
    pool: Arc<slotbox_pool::Pool>,
    server: tokio::task::JoinHandle<()>,
    pub(crate) client: Client,
}

impl EmbeddedPool {
    /// Starts `servers` local sandbox servers of `slots` slots each.
    pub(crate) async fn start(
        servers: usize,
        slots: usize,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Option<Self>> {
        let scheduler = slotbox_pool::LocalScheduler::new(slotbox_pool::LocalConfig {
            binary: std::env::current_exe().context("locating the slotbox binary")?,
            slots_per_server: slots,
            serve_args: Vec::new(),
        })?;
        let pool = slotbox_pool::Pool::new(Arc::new(scheduler), None);
        slotbox_pool::start_background(&pool);
        let startup = crate::up::start_servers(&pool, servers, 4);
        tokio::select! {
            started = startup => {
                if let Err(error) = started {
                    pool.shutdown().await;
                    return Err(error);
                }
            }
            () = cancel.cancelled() => {
                pool.shutdown().await;
                return Ok(None);
            }
        }
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(error) => {
                pool.shutdown().await;
                return Err(error).context("binding the embedded pool");
            }
        };
        let address = listener.local_addr()?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let app = slotbox_pool::router(Arc::clone(&pool), Some(token.clone()));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Some(Self {
            pool,
            server,
            client: Client::new(format!("http://{address}")).with_token(token),
        }))
    }

    /// Stops every server of the pool.
    pub(crate) async fn stop(self) {
        self.pool.shutdown().await;
        self.server.abort();
    }
}

pub(crate) async fn run(args: RolloutArgs) -> anyhow::Result<ExitStatus> {
    let text = std::fs::read_to_string(&args.tasks)
        .with_context(|| format!("reading {}", args.tasks.display()))?;
    let tasks = slotbox_rollout::task::parse_tasks(&text)
        .with_context(|| format!("in {}", args.tasks.display()))?;
    let file = config::load(args.config.as_deref())?.rollout;
    let (model_settings, run_settings, resolved) = settings(&args, &file)?;
    let model = ModelClient::new(model_settings)?;
    let formats: Vec<Format> = args
        .format
        .iter()
        .map(|format| match format {
            FormatArg::Sharegpt => Format::ShareGpt,
            FormatArg::Atropos => Format::Atropos,
        })
        .collect();
    let mut sink = Sink::create(&args.out, &formats, resolved.samples)?;
    let total = tasks.len() as u64 * u64::from(resolved.samples);

    let cancel = CancellationToken::new();
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            crate::serve::shutdown_signal().await;
            tracing::warn!(
                "stopping: running rollouts release their slots; finished ones are kept"
            );
            cancel.cancel();
        })
    };
    let (client, embedded) = match args.pool.as_ref().or(file.pool.as_ref()) {
        Some(url) => {
            let mut client = Client::new(url.clone());
            if let Some(token) = &args.pool_token {
                client = client.with_token(token.clone());
            }
            (client, None)
        }
        None => {
            let concurrency = resolved
                .concurrency
                .min(tasks.len() * resolved.samples as usize)
                .max(1);
            let slots = resolved.slots_per_server.min(concurrency);
            let servers = concurrency.div_ceil(slots);
            match EmbeddedPool::start(servers, slots, &cancel).await? {
                Some(pool) => (pool.client.clone(), Some(pool)),
                None => return Ok(ExitStatus::Command(130)),
            }
        }
    };
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        if std::io::stderr().is_terminal() {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (eta {eta})",
    ) {
        bar.set_style(style);
    }
    let progress = Bar {
        bar,
        passed: 0.into(),
        failed: 0.into(),
    };
    let report = slotbox_rollout::engine::run(
        client,
        model,
        tasks,
        run_settings,
        &mut sink,
        &progress,
        cancel.clone(),
    )
    .await;
    progress.bar.finish_and_clear();
    if let Some(pool) = embedded {
        pool.stop().await;
    }
    watcher.abort();
    let report = report?;
    print_summary(&report.summary, &args, &sink);
    if let Some(path) = &args.summary_json {
        let json = serde_json::to_vec_pretty(&report.summary)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitStatus::Command(if report.cancelled { 130 } else { 0 }))
}

#[allow(clippy::print_stdout)]
fn print_summary(summary: &slotbox_rollout::summary::Summary, args: &RolloutArgs, sink: &Sink) {
    println!(
        "slotbox rollout: {} → {}",
        args.tasks.display(),
        args.out.display()
    );
    print!("{}", summary.table());
    if sink.incomplete_groups() > 0 {
        println!(
            "  {} atropos group(s) incomplete (cancelled); their samples are in {} only",
            sink.incomplete_groups(),
            args.out.display()
        );
    }
}
