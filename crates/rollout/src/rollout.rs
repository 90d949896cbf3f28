//! One rollout: lease a slot, run the task's setup, the agent loop, the verifier, release.
//!
//! The lease is released on every path — success, model failure, setup failure, deadline,
//! cancellation — because each path returns through the one `release` call below; only a crash
//! of the whole process leaves a lease, and the lease's TTL (the rollout's limits plus a margin)
//! bounds that.

use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use slotbox_client::Client;
use slotbox_protocol::v1::CreateLease;
use slotbox_protocol::v1::ExecBody;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent;
use crate::agent::LoopOutcome;
use crate::agent::LoopSettings;
use crate::agent::Metrics;
use crate::agent::Termination;
use crate::agent::TurnTiming;
use crate::budget::Deadline;
use crate::error::Error;
use crate::message::Message;
use crate::message::Role;
use crate::message::ToolCall;
use crate::model::ModelClient;
use crate::task::Task;
use crate::tools::SlotTools;

/// Characters of the verifier's output kept in the trajectory.
const VERIFY_OUTPUT_KEPT: usize = 2000;
/// Time allowed to release a lease (a stuck server must not hold the run).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(15);

/// Settings shared by every rollout of a run.
#[derive(Debug, Clone)]
pub struct RolloutSettings {
    /// The loop's settings (a task's `max_turns` replaces `max_turns`).
    pub agent: LoopSettings,
    /// Wall-clock limit of setup plus loop (a task's `timeout_s` replaces it).
    pub rollout_timeout: Duration,
    /// Limit of one terminal command.
    pub command_timeout: Duration,
    /// Limit of each setup command.
    pub setup_timeout: Duration,
    /// Limit of the verifier.
    pub verify_timeout: Duration,
    /// How long to wait for a free slot (none: as long as it takes, so rollouts beyond the
    /// pool's slots queue).
    pub lease_wait: Option<Duration>,
    /// System message for tasks without one.
    pub default_system: Option<String>,
}

/// Where a rollout's time went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// From start to release.
    pub total_ms: f64,
    /// Waiting for the slot.
    pub lease_ms: f64,
    /// Setup commands.
    pub setup_ms: f64,
    /// The agent loop.
    pub loop_ms: f64,
    /// The verifier.
    pub verify_ms: f64,
    /// Per turn.
    pub turns: Vec<TurnTiming>,
}

/// The verifier's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Its exit code.
    pub exit_code: i32,
    /// The end of its output.
    pub output_tail: String,
}

/// One finished rollout, as written to trajectories.jsonl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// The task's id.
    pub task_id: String,
    /// Which sample of the task (0-based; several with `--samples`).
    pub sample: u32,
    /// The model name asked for.
    pub model: String,
    /// The whole conversation (never cut).
    pub messages: Vec<Message>,
    /// Verifier's reward; `null` without a verifier or when it was skipped.
    pub reward: Option<f64>,
    /// Why the loop ended.
    pub termination: Termination,
    /// Model answers received.
    pub turns: u32,
    /// Counters.
    pub metrics: Metrics,
    /// Where the time went.
    pub timings: Timings,
    /// Some request carried a cut view of the conversation.
    pub context_truncated: bool,
    /// Calls of a final answer cut off by the length limit: not run, so not in `messages`
    /// (every call there is answered), kept here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_tool_calls: Vec<ToolCall>,
    /// The verifier's run, if it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The hermes function-calling system prompt, for models whose tool calls are parsed from text
/// (the tools are described in the prompt rather than sent as `tools`).
pub fn tools_system_prompt(schemas: &serde_json::Value) -> String {
    let tools = schemas
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|tool| slotbox_toolcall::python_json(tool, false))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    format!(
        "You are a function calling AI model. You are provided with function signatures within \
         <tools></tools> XML tags. You may call one or more functions to assist with the user \
         query. Don't make assumptions about what values to plug into functions. Here are the \
         available tools: <tools>\n{tools}\n</tools>\nFor each function call return a json object \
         with function name and arguments within <tool_call></tool_call> XML tags as follows:\n\
         <tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-dict>}}\n</tool_call>"
    )
}

/// The conversation a task starts with.
pub fn initial_messages(task: &Task, settings: &RolloutSettings) -> Vec<Message> {
    let mut system = task
        .system
        .clone()
        .or_else(|| settings.default_system.clone());
    if !settings.agent.send_tools {
        let tools = tools_system_prompt(crate::tools::schemas());
        system = Some(match system {
            Some(system) => format!("{system}\n\n{tools}"),
            None => tools,
        });
    }
    let mut messages = Vec::with_capacity(2);
    if let Some(system) = system {
        messages.push(Message::system(system));
    }
    messages.push(Message::user(task.prompt.clone()));
    messages
}

impl Trajectory {
    /// A trajectory before anything ran: the initial messages, no reward, `tool_fatal` until
    /// the loop says otherwise.
    pub fn started(task: &Task, sample: u32, model: &str, settings: &RolloutSettings) -> Self {
        Self {
            task_id: task.id.clone(),
            sample,
            model: model.to_owned(),
            messages: initial_messages(task, settings),
            reward: None,
            termination: Termination::ToolFatal,
            turns: 0,
            metrics: Metrics::default(),
            timings: Timings::default(),
            context_truncated: false,
            dropped_tool_calls: Vec::new(),
            verification: None,
            error: None,
        }
    }
}

/// Releases its lease when dropped unreleased (a panic unwinding through the rollout), so even
/// then the slot goes back instead of waiting for the lease to expire.
struct LeaseGuard<'a> {
    client: &'a Client,
    lease_id: Option<String>,
}

impl LeaseGuard<'_> {
    async fn release(mut self) {
        if let Some(lease_id) = self.lease_id.take() {
            release(self.client, &lease_id).await;
        }
    }
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        if let (Some(lease_id), Ok(runtime)) =
            (self.lease_id.take(), tokio::runtime::Handle::try_current())
        {
            let client = self.client.clone();
            runtime.spawn(async move { release(&client, &lease_id).await });
        }
    }
}

/// The longest wait one lease request may ask for (servers refuse more than an hour); longer
/// waits are several requests.
const LEASE_REQUEST_WAIT: Duration = Duration::from_secs(600);
/// The longest lease asked for (servers refuse more than a week).
const MAX_TTL: Duration = Duration::from_secs(6 * 24 * 3600);
/// The pause before asking again after a lease refused early.
const LEASE_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long the pool may stay unreachable or failing (transport errors, 5xx) before a rollout
/// gives up leasing: long enough for a pool or proxy restart, short enough that a pool that is
/// gone does not hold the run for ever.
const LEASE_OUTAGE_LIMIT: Duration = Duration::from_secs(60);
/// The first pause after a failed lease request; it doubles up to `LEASE_BACKOFF_MAX`.
const LEASE_BACKOFF: Duration = Duration::from_millis(250);
const LEASE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a lease answer in flight at cancellation is awaited, to release it.
const LEASE_SETTLE: Duration = Duration::from_secs(2);

/// Leases a slot, waiting (in requests of at most `LEASE_REQUEST_WAIT`) up to `limit`, or as
/// long as it takes; asks again with backoff while the pool is unreachable or failing, for up
/// to `LEASE_OUTAGE_LIMIT`. `Ok(None)` when cancelled.
async fn acquire(
    client: &Client,
    ttl: Duration,
    limit: Option<Duration>,
    cancel: &CancellationToken,
) -> Result<Option<slotbox_protocol::v1::Lease>, String> {
    let started = Instant::now();
    // When the current run of failed requests began, and the pause before the next one.
    let mut outage: Option<Instant> = None;
    let mut backoff = LEASE_BACKOFF;
    loop {
        let wait = limit.map_or(LEASE_REQUEST_WAIT, |limit| {
            limit
                .saturating_sub(started.elapsed())
                .min(LEASE_REQUEST_WAIT)
        });
        let request = CreateLease {
            ttl_s: Some(ttl.min(MAX_TTL).as_secs_f64()),
            wait_s: Some(wait.as_secs_f64()),
            network: None,
        };
        let asked = Instant::now();
        let lease = client.lease(&request);
        tokio::pin!(lease);
        let result = tokio::select! {
            result = &mut lease => result,
            () = cancel.cancelled() => {
                // A lease granted as the run stopped must not be left behind.
                if let Ok(Ok(lease)) = tokio::time::timeout(LEASE_SETTLE, lease).await {
                    release(client, &lease.lease_id).await;
                }
                return Ok(None);
            }
        };
        match result {
            Ok(lease) => return Ok(Some(lease)),
            Err(error) if error.code() == Some(&slotbox_client::ErrorCode::NoSlot) => {
                outage = None;
                backoff = LEASE_BACKOFF;
                if let Some(limit) = limit
                    && started.elapsed() >= limit
                {
                    return Err(format!("no slot became free within {limit:?}"));
                }
                // Refused before the wait asked for (a pool shutting down, a server with fewer
                // slots than waiters): pause instead of asking again at once.
                if asked.elapsed() + LEASE_SETTLE < wait {
                    tokio::select! {
                        () = tokio::time::sleep(LEASE_RETRY_PAUSE) => {}
                        () = cancel.cancelled() => return Ok(None),
                    }
                }
            }
            Err(error) if error.is_transient() => {
                // From the first failure's answer, not its request: a lease request is a long
                // poll, and one cut off after a minute is one failure, not a minute of outage.
                let since = *outage.get_or_insert_with(Instant::now);
                if since.elapsed() >= LEASE_OUTAGE_LIMIT {
                    return Err(format!(
                        "the pool failed every lease request for {LEASE_OUTAGE_LIMIT:?}: {error}"
                    ));
                }
                if let Some(limit) = limit
                    && started.elapsed() >= limit
                {
                    return Err(format!("no slot within {limit:?}: {error}"));
                }
                tracing::debug!(%error, ?backoff, "lease request failed; asking again");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = cancel.cancelled() => return Ok(None),
                }
                backoff = (backoff * 2).min(LEASE_BACKOFF_MAX);
            }
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// Runs one rollout of `task`. `None` when cancelled (the lease is released all the same).
pub async fn run_rollout(
    client: &Client,
    model: &ModelClient,
    task: &Task,
    sample: u32,
    settings: &RolloutSettings,
    cancel: &CancellationToken,
) -> Option<Trajectory> {
    let started = Instant::now();
    let mut trajectory = Trajectory::started(task, sample, &model.settings().model, settings);
    let rollout_timeout = task.timeout().unwrap_or(settings.rollout_timeout);
    // The lease outlives everything the rollout may do, so only a crash leaves it behind, and
    // then only until it expires.
    let ttl = rollout_timeout
        .saturating_add(settings.verify_timeout)
        .saturating_add(Duration::from_secs(120));
    let lease = acquire(client, ttl, settings.lease_wait, cancel).await;
    trajectory.timings.lease_ms = ms(started.elapsed());
    let lease = match lease {
        Ok(Some(lease)) => lease,
        Ok(None) => return None,
        Err(error) => {
            trajectory.error = Some(format!("no slot: {error}"));
            trajectory.timings.total_ms = ms(started.elapsed());
            return Some(trajectory);
        }
    };
    let guard = LeaseGuard {
        client,
        lease_id: Some(lease.lease_id.clone()),
    };
    let finished = work(
        client,
        model,
        task,
        settings,
        &lease.lease_id,
        &mut trajectory,
        cancel,
    )
    .await;
    guard.release().await;
    trajectory.timings.total_ms = ms(started.elapsed());
    finished.then_some(trajectory)
}

/// Setup, loop and verifier in the leased slot; false when cancelled.
async fn work(
    client: &Client,
    model: &ModelClient,
    task: &Task,
    settings: &RolloutSettings,
    lease_id: &str,
    trajectory: &mut Trajectory,
    cancel: &CancellationToken,
) -> bool {
    let deadline = Deadline::after(task.timeout().unwrap_or(settings.rollout_timeout));
    let setup_started = Instant::now();
    for (index, command) in task.setup.iter().enumerate() {
        let timeout = settings.setup_timeout.min(deadline.remaining());
        let result = tokio::select! {
            result = run_command(client, lease_id, command, timeout) => result,
            () = cancel.cancelled() => return false,
        };
        let failure = match result {
            Ok(result) if result.exit_code == 0 => continue,
            Ok(result) => format!(
                "exit code {}: {}",
                result.exit_code,
                tail(&result.output, 500)
            ),
            Err(error) => error.to_string(),
        };
        if deadline.passed() {
            trajectory.termination = Termination::Timeout;
        }
        trajectory.error = Some(
            Error::Setup {
                index: index + 1,
                command: command.clone(),
                reason: failure,
            }
            .to_string(),
        );
        trajectory.timings.setup_ms = ms(setup_started.elapsed());
        return true;
    }
    trajectory.timings.setup_ms = ms(setup_started.elapsed());

    let mut agent = settings.agent.clone();
    if let Some(max_turns) = task.max_turns {
        agent.max_turns = max_turns;
    }
    let tools = SlotTools::new(client.clone(), lease_id, settings.command_timeout);
    let loop_started = Instant::now();
    let outcome = agent::run_loop(
        model,
        &tools,
        &agent,
        &mut trajectory.messages,
        deadline,
        cancel,
    )
    .await;
    trajectory.timings.loop_ms = ms(loop_started.elapsed());
    let Ok(outcome) = outcome else {
        return false;
    };
    let LoopOutcome {
        termination,
        turns,
        metrics,
        timings,
        error,
        context_truncated,
        dropped_tool_calls,
    } = outcome;
    trajectory.dropped_tool_calls = dropped_tool_calls;
    trajectory.termination = termination;
    trajectory.turns = turns;
    trajectory.metrics = metrics;
    trajectory.timings.turns = timings;
    trajectory.error = error;
    trajectory.context_truncated = context_truncated;

    // The reference's reward skip: nothing to judge when the model never answered, or the slot
    // is gone.
    let answered = trajectory
        .messages
        .iter()
        .any(|message| message.role == Role::Assistant);
    if let Some(verify) = &task.verify
        && answered
        && termination != Termination::ToolFatal
    {
        let verify_started = Instant::now();
        let result = tokio::select! {
            result = run_command(client, lease_id, verify, settings.verify_timeout) => result,
            () = cancel.cancelled() => return false,
        };
        trajectory.timings.verify_ms = ms(verify_started.elapsed());
        match result {
            Ok(result) => {
                trajectory.reward = Some(reward(result.exit_code, &result.output));
                trajectory.verification = Some(Verification {
                    exit_code: result.exit_code,
                    output_tail: tail(&result.output, VERIFY_OUTPUT_KEPT),
                });
            }
            Err(error) => {
                // No judgement: the verifier never ran to its end (the slot or the pool
                // failed), and a 0.0 would count an infrastructure fault as the model's.
                trajectory.reward = None;
                let note = format!("verify: {error}");
                trajectory.error = Some(match trajectory.error.take() {
                    Some(earlier) => format!("{earlier}; {note}"),
                    None => note,
                });
            }
        }
    }
    true
}

async fn run_command(
    client: &Client,
    lease_id: &str,
    command: &str,
    timeout: Duration,
) -> Result<slotbox_protocol::ExecResult, slotbox_client::Error> {
    let mut body = ExecBody::new(command);
    body.timeout_s = Some(timeout.as_secs_f64().max(0.001));
    client.exec(lease_id, &body).await
}

async fn release(client: &Client, lease_id: &str) {
    match tokio::time::timeout(RELEASE_TIMEOUT, client.release(lease_id)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(lease_id, %error, "releasing a lease failed"),
        Err(_) => tracing::warn!(lease_id, "releasing a lease timed out"),
    }
}

/// Exit 0 → 1.0, else 0.0; a finite number alone on the last non-empty output line wins.
pub fn reward(exit_code: i32, output: &str) -> f64 {
    let last = output
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty());
    if let Some(value) = last.and_then(|line| line.parse::<f64>().ok())
        && value.is_finite()
    {
        return value;
    }
    if exit_code == 0 { 1.0 } else { 0.0 }
}

fn tail(text: &str, keep: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(keep)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reward_is_the_exit_status_unless_a_number_ends_the_output() {
        assert_eq!(reward(0, "all good\n"), 1.0);
        assert_eq!(reward(1, "failed\n"), 0.0);
        assert_eq!(reward(0, "checks\n0.25\n\n"), 0.25);
        assert_eq!(reward(1, "partial\n0.5"), 0.5);
        assert_eq!(reward(0, "nan\n"), 1.0);
        assert_eq!(reward(0, "1.0 of 2\n"), 1.0);
        assert_eq!(reward(3, ""), 0.0);
    }
}
