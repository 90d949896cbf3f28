//! The agent loop: model turn, tool calls, tool answers, until the model stops or a limit hits.
//!
//! Invariants the loop keeps (checked against a fake model server by the tests):
//! - every `tool_call_id` of an assistant message is answered by exactly one `tool` message, in
//!   call order, before the next request — whatever happens to the call (unknown tool, bad
//!   JSON, invalid arguments, tool error, slot failure, deadline);
//! - no request carries more than `max_context_tokens` (estimated); when the view had to be cut
//!   the outcome says so, and when nothing fits the rollout ends as `context`;
//! - the trajectory is never cut: the view is a copy.
//!
//! Calls run one after another in the slot's single shell session, as in the reference (and as a
//! session demands: `cd` then `ls` must not race).

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use serde_json::Map;
use serde_json::Value;
use slotbox_toolcall::Mode;
use slotbox_toolcall::Parser;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::Deadline;
use crate::context;
use crate::context::View;
use crate::error::Error;
use crate::hermes_text;
use crate::message::Message;
use crate::message::ToolCall;
use crate::model::Completion;
use crate::model::ModelClient;
use crate::model::new_call_id;
use crate::tools;
use crate::tools::Answer;
use crate::tools::Outcome;
use crate::tools::Toolbox;

/// Why a trajectory ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Termination {
    /// The model answered without tool calls.
    Stop,
    /// The turn limit was reached.
    MaxTurns,
    /// The model hit its completion limit (`finish_reason: length`).
    Length,
    /// The conversation no longer fits the context budget (or the server said so).
    Context,
    /// The model server failed (after retries) or answered nonsense.
    ApiError,
    /// The rollout's deadline passed.
    Timeout,
    /// The slot failed (lease lost, server gone, setup failed).
    ToolFatal,
}

impl Termination {
    /// Every value, in the order summaries list them.
    pub const ALL: [Termination; 7] = [
        Termination::Stop,
        Termination::MaxTurns,
        Termination::Length,
        Termination::Context,
        Termination::ApiError,
        Termination::Timeout,
        Termination::ToolFatal,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Termination::Stop => "stop",
            Termination::MaxTurns => "max_turns",
            Termination::Length => "length",
            Termination::Context => "context",
            Termination::ApiError => "api_error",
            Termination::Timeout => "timeout",
            Termination::ToolFatal => "tool_fatal",
        }
    }
}

/// How the model's tool calls arrive.
#[derive(Debug, Clone, Copy)]
pub enum CallFormat {
    /// The server's `tool_calls` (with hermes' `<tool_call>` text fallback, as MAIN04).
    Native,
    /// Parsed from the text by this parser (for servers without tool-call support).
    Text(&'static dyn Parser),
}

/// The loop's settings.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// Model turns at most.
    pub max_turns: u32,
    /// Native calls or a text parser.
    pub format: CallFormat,
    /// Strict reference parsing or lenient.
    pub mode: Mode,
    /// Context budget in estimated tokens (none: no limit).
    pub max_context_tokens: Option<u64>,
    /// Send the `tools` array with each request (else the tools are in the system prompt).
    pub send_tools: bool,
}

/// Tool-call and loop counters of one trajectory.
///
/// Per call exactly one of `executed_ok` / `exec_error` counts, so
/// `attempted + unknown_tool == executed_ok + exec_error` (the reference's invariant).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Calls of a known tool.
    pub tool_calls_attempted: u64,
    /// Calls whose arguments decoded directly to an object that satisfies the tool's schema.
    pub tool_calls_schema_valid: u64,
    /// Calls that ran (a non-zero exit status is still a run).
    pub tool_calls_executed_ok: u64,
    /// Calls answered with an error (unknown tool, bad JSON, invalid arguments, tool failure).
    pub tool_calls_exec_error: u64,
    /// Calls of a tool that does not exist.
    pub unknown_tool: u64,
    /// Calls whose arguments were not JSON.
    pub invalid_json: u64,
    /// Calls whose arguments were repaired by normalisation (a string, double-encoded JSON).
    pub args_normalised: u64,
    /// Malformed text calls dropped while others of the turn were kept (lenient parsing).
    pub parse_dropped: u64,
    /// Truncated trailing text calls repaired (lenient parsing).
    pub parse_recovered_truncated: u64,
    /// String arguments kept single-encoded where the reference parser double-encodes them
    /// (lenient parsing).
    pub parse_single_encoded: u64,
    /// Turns whose prompt view had to be cut to fit the context budget.
    pub context_cuts: u64,
    /// Model requests retried (429, 5xx, broken connections).
    pub model_retries: u64,
    /// Tool calls not run because the model hit its length limit mid-answer.
    pub calls_dropped_on_length: u64,
    /// Prompt tokens the server reported, summed over turns.
    pub prompt_tokens: u64,
    /// Completion tokens the server reported, summed over turns.
    pub completion_tokens: u64,
}

/// Where one turn's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnTiming {
    /// The model request(s) on the wire, retries and backoff included (building the request
    /// and reading the answer are the engine's).
    pub model_ms: f64,
    /// The tool calls, as the slot took them.
    pub tools_ms: f64,
    /// The whole turn.
    pub wall_ms: f64,
}

impl TurnTiming {
    /// The engine's own share of the turn: wall time minus model and tool time.
    pub fn overhead_ms(&self) -> f64 {
        (self.wall_ms - self.model_ms - self.tools_ms).max(0.0)
    }
}

/// How a loop ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopOutcome {
    /// Why.
    pub termination: Termination,
    /// Model answers received.
    pub turns: u32,
    /// Counters.
    pub metrics: Metrics,
    /// One entry per turn.
    pub timings: Vec<TurnTiming>,
    /// What went wrong, for `api_error`, `timeout`, `context` and `tool_fatal`.
    pub error: Option<String>,
    /// Some request carried a cut view of the conversation.
    pub context_truncated: bool,
    /// Calls of an answer cut off by the length limit (not run).
    pub dropped_tool_calls: Vec<ToolCall>,
}

/// The loop was cancelled (the caller drops the trajectory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Runs the loop on `messages` (system and user already in), appending every turn.
pub async fn run_loop<T: Toolbox>(
    model: &ModelClient,
    tools: &T,
    settings: &LoopSettings,
    messages: &mut Vec<Message>,
    deadline: Deadline,
    cancel: &CancellationToken,
) -> Result<LoopOutcome, Cancelled> {
    let mut outcome = LoopOutcome {
        termination: Termination::MaxTurns,
        turns: 0,
        metrics: Metrics::default(),
        timings: Vec::new(),
        error: None,
        context_truncated: false,
        dropped_tool_calls: Vec::new(),
    };
    let schemas = settings.send_tools.then(|| tools.schemas());
    let fixed = schemas.map_or(0, |schemas| context::estimate_text(&schemas.to_string()));
    // Every call id so far (a history handed in may hold some): an answer must point at one
    // call of the whole trajectory, even when a server or parser numbers calls afresh per turn.
    let mut ids: std::collections::HashSet<String> = messages
        .iter()
        .flat_map(|message| message.tool_calls.iter().map(|call| call.id.clone()))
        .collect();
    for _ in 0..settings.max_turns {
        let turn_started = Instant::now();
        let mut timing = TurnTiming::default();
        let prompt = match prompt_view(messages, settings, fixed) {
            Ok((prompt, cut)) => {
                if cut {
                    outcome.metrics.context_cuts += 1;
                    outcome.context_truncated = true;
                }
                prompt
            }
            Err(estimate) => {
                outcome.termination = Termination::Context;
                outcome.error = Some(format!(
                    "the conversation needs about {estimate} tokens even cut down; the budget is {}",
                    settings.max_context_tokens.unwrap_or_default()
                ));
                return Ok(outcome);
            }
        };
        let prompt: &[Message] = &prompt;
        // `complete` is bounded by the deadline itself (each attempt's timeout and each backoff
        // are), so it reports its attempts however it ends.
        let answer = tokio::select! {
            answer = model.complete(prompt, schemas, deadline) => answer,
            () = cancel.cancelled() => return Err(Cancelled),
        };
        let completion = match answer {
            Ok(completion) => {
                timing.model_ms = ms(completion.wire);
                completion
            }
            Err(failed) => {
                // The failed turn still counts its retries and its time.
                outcome.metrics.model_retries += u64::from(failed.attempts.saturating_sub(1));
                timing.model_ms = ms(failed.wire);
                timing.wall_ms = ms(turn_started.elapsed());
                outcome.timings.push(timing);
                outcome.termination = match failed.error {
                    Error::Deadline(_) => Termination::Timeout,
                    Error::ModelContext { .. } => Termination::Context,
                    _ => Termination::ApiError,
                };
                outcome.error = Some(failed.error.to_string());
                return Ok(outcome);
            }
        };
        outcome.turns += 1;
        record_usage(&mut outcome.metrics, &completion);
        let length = completion.finish_reason.as_deref() == Some("length");
        let (content, reasoning, calls) =
            interpret(completion, settings, &mut outcome.metrics, &mut ids);
        if length {
            // Calls cut off mid-generation are not run; the text is kept whole (markup
            // included) so nothing the model wrote is lost.
            outcome.metrics.calls_dropped_on_length += calls.len() as u64;
            outcome.dropped_tool_calls = calls;
            messages.push(Message::assistant(content.raw, reasoning, Vec::new()));
            outcome.termination = Termination::Length;
            timing.wall_ms = ms(turn_started.elapsed());
            outcome.timings.push(timing);
            return Ok(outcome);
        }
        if calls.is_empty() {
            messages.push(Message::assistant(content.kept, reasoning, Vec::new()));
            outcome.termination = Termination::Stop;
            timing.wall_ms = ms(turn_started.elapsed());
            outcome.timings.push(timing);
            return Ok(outcome);
        }
        messages.push(Message::assistant(content.kept, reasoning, calls.clone()));
        let tools_started = Instant::now();
        let mut stop: Option<(Termination, String)> = None;
        for call in &calls {
            let answer = match &stop {
                Some((_, why)) => {
                    count_unrun(tools, call, &mut outcome.metrics);
                    Answer::error(format!("not run: {why}"))
                }
                None => {
                    let answer =
                        dispatch(tools, call, &mut outcome.metrics, deadline, cancel).await?;
                    match &answer.outcome {
                        Outcome::Fatal(why) => {
                            stop =
                                Some((Termination::ToolFatal, format!("the slot failed: {why}")));
                        }
                        Outcome::Error if deadline.passed() => {
                            stop = Some((
                                Termination::Timeout,
                                format!("the rollout's deadline of {:?} passed", deadline.total()),
                            ));
                        }
                        Outcome::Ok | Outcome::Error => {}
                    }
                    answer
                }
            };
            messages.push(Message::tool(&call.id, answer.content));
        }
        timing.tools_ms = ms(tools_started.elapsed());
        timing.wall_ms = ms(turn_started.elapsed());
        outcome.timings.push(timing);
        if let Some((termination, why)) = stop {
            outcome.termination = termination;
            outcome.error = Some(why);
            return Ok(outcome);
        }
        if deadline.passed() {
            outcome.termination = Termination::Timeout;
            outcome.error = Some(format!(
                "the rollout's deadline of {:?} passed",
                deadline.total()
            ));
            return Ok(outcome);
        }
    }
    Ok(outcome)
}

/// What is sent this turn, and whether it was cut: the conversation, with a text parser rendered
/// as plain text turns (`hermes_text`) first, so the budget is checked on exactly what is sent;
/// then cut to the budget. `Err` carries the estimate of the smallest view when nothing fits.
fn prompt_view<'a>(
    messages: &'a [Message],
    settings: &LoopSettings,
    fixed: u64,
) -> Result<(Cow<'a, [Message]>, bool), u64> {
    let turns: Cow<'a, [Message]> = match settings.format {
        CallFormat::Text(_) => Cow::Owned(hermes_text::as_text_turns(messages)),
        CallFormat::Native => Cow::Borrowed(messages),
    };
    let (view, cut) = match settings.max_context_tokens {
        None => (turns, false),
        Some(budget) => match context::fit(&turns, fixed, budget) {
            View::Whole => (turns, false),
            View::Cut(view) => (Cow::Owned(view), true),
            View::TooLarge(estimate) => return Err(estimate),
        },
    };
    Ok(match settings.format {
        CallFormat::Text(_) => (Cow::Owned(hermes_text::to_wire(view.into_owned())), cut),
        CallFormat::Native => (view, cut),
    })
}

fn record_usage(metrics: &mut Metrics, completion: &Completion) {
    metrics.model_retries += u64::from(completion.attempts.saturating_sub(1));
    if let Some(usage) = completion.usage {
        metrics.prompt_tokens += usage.prompt_tokens;
        metrics.completion_tokens += usage.completion_tokens;
    }
}

/// An answer's text: as received (reasoning aside) and as kept beside parsed calls.
struct Content {
    raw: String,
    kept: String,
}

/// Splits a completion into text, reasoning and calls, giving a fresh id to a call whose id is
/// empty or already in `ids` (which gets the new ones).
fn interpret(
    completion: Completion,
    settings: &LoopSettings,
    metrics: &mut Metrics,
    ids: &mut std::collections::HashSet<String>,
) -> (Content, Option<String>, Vec<ToolCall>) {
    let (text, think) = split_think(&completion.content);
    // Both kinds at once (a server's reasoning parser and a `<think>` block it left in the
    // text): keep both, in the order the model produced them.
    let reasoning = match (completion.reasoning, think) {
        (Some(parsed), Some(think)) => Some(format!("{parsed}\n\n{think}")),
        (parsed, think) => parsed.or(think),
    };
    let mut calls = completion.tool_calls;
    let mut kept = text.clone();
    let parser = match settings.format {
        CallFormat::Text(parser) if calls.is_empty() => Some(parser),
        // MAIN04's fallback: a server that did not parse hermes-format calls itself.
        CallFormat::Native if calls.is_empty() && text.contains("<tool_call>") => {
            slotbox_toolcall::parser("hermes").ok()
        }
        CallFormat::Native | CallFormat::Text(_) => None,
    };
    if let Some(parser) = parser {
        let parsed = parser.parse(&text, settings.mode);
        metrics.parse_dropped += parsed.diagnostics.dropped as u64;
        metrics.parse_recovered_truncated += parsed.diagnostics.recovered_truncated as u64;
        metrics.parse_single_encoded += parsed.diagnostics.single_encoded as u64;
        if !parsed.calls.is_empty() {
            kept = parsed.content.unwrap_or_default();
            calls = parsed
                .calls
                .into_iter()
                .map(|call| ToolCall::function(call.id, call.name, call.arguments))
                .collect();
        }
    }
    for call in &mut calls {
        // Servers have been seen to repeat ids within a turn, and text parsers number calls
        // per answer (`call_0`); answers must be unambiguous.
        while call.id.is_empty() || !ids.insert(call.id.clone()) {
            call.id = new_call_id();
        }
    }
    (Content { raw: text, kept }, reasoning, calls)
}

/// Separates a leading `<think>…</think>` block from the text (servers without a reasoning
/// parser leave it in `content`); an unclosed block is all reasoning (the answer was cut).
pub fn split_think(content: &str) -> (String, Option<String>) {
    let trimmed = content.trim_start();
    let Some(rest) = trimmed.strip_prefix("<think>") else {
        return (content.to_owned(), None);
    };
    match rest.find("</think>") {
        Some(end) => {
            let thought = rest[..end].trim().to_owned();
            let after = rest[end + "</think>".len()..].trim_start().to_owned();
            (after, Some(thought).filter(|t| !t.is_empty()))
        }
        None => (
            String::new(),
            Some(rest.trim().to_owned()).filter(|t| !t.is_empty()),
        ),
    }
}

/// Counts a call that is answered without running (an earlier call ended the turn).
fn count_unrun<T: Toolbox>(tools: &T, call: &ToolCall, metrics: &mut Metrics) {
    if tools.names().contains(&call.function.name.as_str()) {
        metrics.tool_calls_attempted += 1;
    } else {
        metrics.unknown_tool += 1;
    }
    metrics.tool_calls_exec_error += 1;
}

/// Decodes a call's arguments. Valid JSON goes through the reference normaliser (§1.10: an
/// object as is, but terminal's `input` becomes `command`; `"ls"` → `{"command": "ls"}` for
/// terminal; double-encoded objects decoded), which also says whether they were schema-valid;
/// empty text is `{}`. Text that is not JSON at all is the model's to fix: it gets the
/// "Invalid JSON" error (MAIN04's fix #2342), not a guess at a command.
fn decode_arguments(name: &str, raw: &str) -> Result<(Map<String, Value>, bool), String> {
    if raw.trim().is_empty() {
        return Ok((Map::new(), true));
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(_) => Ok(slotbox_toolcall::normalize_tool_args(name, raw)),
        // Python's wording (`Expecting value: line 1 column 1 (char 0)`), as the reference
        // tells the model.
        Err(error) => Err(match slotbox_toolcall::python_json_loads(raw) {
            Err(slotbox_toolcall::Error::InvalidJson { message }) => message,
            _ => error.to_string(),
        }),
    }
}

async fn dispatch<T: Toolbox>(
    tools: &T,
    call: &ToolCall,
    metrics: &mut Metrics,
    deadline: Deadline,
    cancel: &CancellationToken,
) -> Result<Answer, Cancelled> {
    let name = call.function.name.as_str();
    if !tools.names().contains(&name) {
        metrics.unknown_tool += 1;
        metrics.tool_calls_exec_error += 1;
        let mut names: Vec<&str> = tools.names().to_vec();
        names.sort_unstable();
        return Ok(Answer::error(format!(
            "Unknown tool '{name}'. Available tools: {}",
            slotbox_toolcall::python_repr_str_list(&names)
        )));
    }
    metrics.tool_calls_attempted += 1;
    let (arguments, direct) = match decode_arguments(name, &call.function.arguments) {
        Ok(decoded) => decoded,
        Err(reason) => {
            metrics.invalid_json += 1;
            metrics.tool_calls_exec_error += 1;
            return Ok(Answer::error(format!(
                "Invalid JSON in tool arguments: {reason}. Please retry with valid JSON."
            )));
        }
    };
    if let Err(reason) = tools::validate(name, &arguments) {
        metrics.tool_calls_exec_error += 1;
        return Ok(Answer::error(format!(
            "Invalid arguments for {name}: {reason}"
        )));
    }
    if direct {
        metrics.tool_calls_schema_valid += 1;
    } else {
        metrics.args_normalised += 1;
    }
    let answer = tokio::select! {
        answer = tools.call(name, &arguments, deadline) => answer,
        () = cancel.cancelled() => return Err(Cancelled),
        () = tokio::time::sleep_until(deadline.instant()) => Answer::error(format!(
            "the rollout's deadline of {:?} passed while the call ran", deadline.total()
        )),
    };
    match answer.outcome {
        Outcome::Ok => metrics.tool_calls_executed_ok += 1,
        Outcome::Error | Outcome::Fatal(_) => metrics.tool_calls_exec_error += 1,
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn text_settings(budget: u64) -> LoopSettings {
        LoopSettings {
            max_turns: 5,
            format: CallFormat::Text(slotbox_toolcall::parser("hermes").unwrap()),
            mode: Mode::Lenient,
            max_context_tokens: Some(budget),
            send_tools: false,
        }
    }

    #[test]
    fn text_prompts_are_sized_as_rendered_and_never_sent_over_budget() {
        let mut messages = vec![Message::system("s"), Message::user("task")];
        for round in 0..3 {
            let calls: Vec<ToolCall> = (0..30)
                .map(|i| {
                    ToolCall::function(format!("c{round}_{i}"), "terminal", "{\"command\": \"ls\"}")
                })
                .collect();
            let ids: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
            messages.push(Message::assistant("", None, calls));
            for id in ids {
                messages.push(Message::tool(id, "ok"));
            }
        }
        let rendered = hermes_text::to_wire(hermes_text::as_text_turns(&messages));
        let exact = context::estimate(&rendered, 0);
        // Exactly the rendered size fits whole, though the native shape would be larger.
        assert!(context::estimate(&messages, 0) > exact);
        let (view, cut) = prompt_view(&messages, &text_settings(exact), 0).unwrap();
        assert!(!cut);
        assert_eq!(view.as_ref(), rendered.as_slice());
        for budget in (50..exact).step_by(37) {
            match prompt_view(&messages, &text_settings(budget), 0) {
                Ok((view, cut)) => {
                    assert!(cut);
                    assert!(context::estimate(&view, 0) <= budget);
                    assert!(view.iter().all(|m| m.role != crate::message::Role::Tool));
                }
                Err(smallest) => assert!(smallest > budget),
            }
        }
    }

    #[test]
    fn think_blocks_become_reasoning() {
        assert_eq!(
            split_think("<think>\nhmm\n</think>\n\nanswer"),
            ("answer".to_owned(), Some("hmm".to_owned()))
        );
        assert_eq!(
            split_think("<think>cut off"),
            (String::new(), Some("cut off".to_owned()))
        );
        assert_eq!(
            split_think("plain <think>x</think>"),
            ("plain <think>x</think>".to_owned(), None)
        );
    }

    #[test]
    fn arguments_decode_as_the_reference_normalises_them() {
        let (args, direct) = decode_arguments("terminal", "{\"command\": \"ls\"}").unwrap();
        assert!(direct);
        assert_eq!(args["command"], "ls");
        let (args, direct) = decode_arguments("terminal", "\"ls -la\"").unwrap();
        assert!(!direct);
        assert_eq!(args["command"], "ls -la");
        let (args, _) = decode_arguments("terminal", "\"{\\\"command\\\": \\\"pwd\\\"}\"").unwrap();
        assert_eq!(args["command"], "pwd");
        // An object through the normaliser too: terminal's `input` is its command.
        let (args, direct) = decode_arguments("terminal", "{\"input\": \"ls\"}").unwrap();
        assert!(!direct);
        assert_eq!(args["command"], "ls");
        assert!(args.get("input").is_none());
        let (args, direct) = decode_arguments("read_file", "{\"input\": \"x\"}").unwrap();
        assert!(direct);
        assert_eq!(args["input"], "x");
        // Not JSON at all: an error for the model, not a guessed command.
        assert!(decode_arguments("terminal", "ls -la").is_err());
        assert_eq!(
            decode_arguments("terminal", "{\"command\": \"ls").unwrap_err(),
            "Unterminated string starting at: line 1 column 13 (char 12)"
        );
        assert!(decode_arguments("terminal", "").unwrap().0.is_empty());
    }
}
