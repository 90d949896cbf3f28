//! A **fake** OpenAI-compatible `/v1/chat/completions` server, for testing and benchmarking
//! slotbox's rollout engine without a model (none can be fetched on the build machines).
//!
//! It follows the documented wire format (request: `model`, `messages`, `tools`, `n`, …;
//! response: `choices[0].message` with `content`, `tool_calls`, `reasoning_content`,
//! `finish_reason`, and `usage`), and it is strict about what it receives: every request is
//! checked against the protocol invariants a real server relies on (below), and each breach is
//! recorded as a violation that tests assert to be empty.
//!
//! What it answers is decided by a *policy* — a function of the request — so a test scripts a
//! conversation ([`Script`]), and a benchmark answers "call the terminal until turn N".
//! Replies include faults: an HTTP status (429 with `Retry-After`, 500), a dropped connection,
//! `finish_reason: length`.
//!
//! Checked on every request:
//! - `POST /v1/chat/completions`, a JSON object body, `model` as expected, `n` absent or 1, the
//!   bearer token when one is expected;
//! - `messages` non-empty, known roles, string `content`, first message system or user;
//! - every assistant `tool_calls` entry well-formed (`id`, `type: function`, string name and
//!   string `arguments`), ids unique in the message, and answered by exactly one `tool`
//!   message each, right after it, before any other message; no `tool` message otherwise;
//! - the prompt's size within the configured context budget: the bytes of every text a model
//!   reads (contents, reasoning, call names and arguments, the `tools` JSON) / 4 — a looser
//!   measure than the engine's own estimate, computed independently;
//! - `tools`, when sent, an array of function tools.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::Response;
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use serde_json::json;

/// What the fake answers to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A chat completion.
    Message {
        /// `content` (`null` when `None`).
        content: Option<String>,
        /// Native `tool_calls` entries, as JSON.
        tool_calls: Vec<Value>,
        /// `reasoning_content`.
        reasoning: Option<String>,
        /// `finish_reason`.
        finish_reason: String,
    },
    /// An error status with a body (and `Retry-After` seconds).
    Status {
        /// HTTP status.
        status: u16,
        /// Body text.
        body: String,
        /// `Retry-After` header.
        retry_after: Option<u64>,
    },
    /// Close the connection without answering.
    Drop,
    /// Never answer: hold the request until the client gives up (a server stuck mid-generation),
    /// which tests the client's per-request timeout.
    Stall,
}

impl Reply {
    /// A plain text answer (`finish_reason: stop`).
    pub fn text(content: impl Into<String>) -> Self {
        Reply::Message {
            content: Some(content.into()),
            tool_calls: Vec::new(),
            reasoning: None,
            finish_reason: "stop".to_owned(),
        }
    }

    /// Native tool calls: `(id, name, arguments text)` each (`finish_reason: tool_calls`).
    pub fn calls(calls: &[(&str, &str, &str)]) -> Self {
        Reply::Message {
            content: None,
            tool_calls: calls
                .iter()
                .map(|(id, name, arguments)| {
                    json!({"id": id, "type": "function",
                           "function": {"name": name, "arguments": arguments}})
                })
                .collect(),
            reasoning: None,
            finish_reason: "tool_calls".to_owned(),
        }
    }

    /// One native terminal call.
    pub fn terminal(id: &str, command: &str) -> Self {
        let arguments = json!({ "command": command }).to_string();
        Self::calls(&[(id, "terminal", &arguments)])
    }

    /// The same reply with `reasoning_content`.
    pub fn with_reasoning(mut self, text: impl Into<String>) -> Self {
        if let Reply::Message { reasoning, .. } = &mut self {
            *reasoning = Some(text.into());
        }
        self
    }

    /// The same reply with another `finish_reason` (e.g. `length`).
    pub fn with_finish_reason(mut self, reason: &str) -> Self {
        if let Reply::Message { finish_reason, .. } = &mut self {
            *finish_reason = reason.to_owned();
        }
        self
    }

    /// An error status.
    pub fn status(status: u16, retry_after: Option<u64>) -> Self {
        Reply::Status {
            status,
            body: json!({"error": {"message": format!("fake status {status}"), "type": "fake"}})
                .to_string(),
            retry_after,
        }
    }
}

/// One request as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The whole body.
    pub body: Value,
    /// The first user message's content: which conversation this is.
    pub key: String,
    /// Assistant messages already in the conversation: which turn this is (0-based).
    pub turn: usize,
}

impl Request {
    /// The messages.
    pub fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The content of the last message, if it is a tool message.
    pub fn last_tool_result(&self) -> Option<&str> {
        self.messages()
            .last()
            .filter(|message| message["role"] == "tool")
            .and_then(|message| message["content"].as_str())
    }
}

/// The fake's settings.
#[derive(Debug, Clone, Default)]
pub struct FakeConfig {
    /// Time each answer is held back (a model's generation time).
    pub latency: Duration,
    /// The `model` every request must name.
    pub expect_model: Option<String>,
    /// The bearer token every request must carry.
    pub expect_api_key: Option<String>,
    /// Context budget: a prompt's text bytes / 4 must stay within it.
    pub max_prompt_tokens: Option<u64>,
    /// Keep every request for inspection (off for benchmarks).
    pub record: bool,
}

type Policy = dyn Fn(&Request) -> Reply + Send + Sync;

struct State {
    config: FakeConfig,
    policy: Box<Policy>,
    requests: Mutex<Vec<Request>>,
    violations: Mutex<Vec<String>>,
    count: AtomicU64,
    held_ns: AtomicU64,
}

/// A running fake server; stops when dropped.
pub struct FakeModel {
    address: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeModel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FakeModel")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeModel {
    /// Starts the fake on a free loopback port.
    pub async fn start(
        config: FakeConfig,
        policy: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state = Arc::new(State {
            config,
            policy: Box::new(policy),
            requests: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            count: AtomicU64::new(0),
            held_ns: AtomicU64::new(0),
        });
        let served = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { handle(&state, request).await }
                    });
                    // A policy's `Drop` ends the connection through a service error.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            address,
            state,
            task,
        })
    }

    /// The OpenAI base URL (`http://127.0.0.1:PORT/v1`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// Requests received so far (when recording).
    pub fn requests(&self) -> Vec<Request> {
        self.state
            .requests
            .lock()
            .map(|requests| requests.clone())
            .unwrap_or_default()
    }

    /// Protocol breaches seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.state
            .violations
            .lock()
            .map(|violations| violations.clone())
            .unwrap_or_default()
    }

    /// Requests received so far.
    pub fn request_count(&self) -> u64 {
        self.state.count.load(Ordering::Relaxed)
    }

    /// Total time answers were held back on purpose (the fake's "generation" time).
    pub fn held(&self) -> Duration {
        Duration::from_nanos(self.state.held_ns.load(Ordering::Relaxed))
    }
}

/// Why a connection is dropped on purpose.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("connection dropped by the fake's policy")
    }
}

impl std::error::Error for DropConnection {}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(
    state: &State,
    request: hyper::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    state.count.fetch_add(1, Ordering::Relaxed);
    let mut violations = Vec::new();
    if request.method() != hyper::Method::POST || request.uri().path() != "/v1/chat/completions" {
        violations.push(format!("{} {}", request.method(), request.uri().path()));
        state.note(violations);
        return Ok(respond(StatusCode::NOT_FOUND, "{}".to_owned()));
    }
    if let Some(key) = &state.config.expect_api_key {
        let header = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        if header != Some(&format!("Bearer {key}")) {
            violations.push(format!("authorization {header:?}"));
        }
    }
    let bytes = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(DropConnection),
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(body) => body,
        Err(error) => {
            violations.push(format!("body is not JSON: {error}"));
            state.note(violations);
            return Ok(respond(StatusCode::BAD_REQUEST, "{}".to_owned()));
        }
    };
    check(&state.config, &body, &mut violations);
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let key = messages
        .iter()
        .find(|message| message["role"] == "user")
        .and_then(|message| message["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let turn = messages
        .iter()
        .filter(|message| message["role"] == "assistant")
        .count();
    let prompt_bytes: usize = messages
        .iter()
        .map(|message| message["content"].as_str().map_or(0, str::len))
        .sum();
    let seen = Request { body, key, turn };
    let reply = (state.policy)(&seen);
    if state.config.record
        && let Ok(mut requests) = state.requests.lock()
    {
        requests.push(seen.clone());
    }
    state.note(violations);
    let held = Instant::now();
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
    let held_ns = u64::try_from(held.elapsed().as_nanos()).unwrap_or(u64::MAX);
    state.held_ns.fetch_add(held_ns, Ordering::Relaxed);
    match reply {
        Reply::Drop => Err(DropConnection),
        // The connection's task drops this future when the client goes away.
        Reply::Stall => std::future::pending().await,
        Reply::Status {
            status,
            body,
            retry_after,
        } => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = respond(code, body);
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(hyper::header::RETRY_AFTER, seconds.into());
            }
            Ok(response)
        }
        Reply::Message {
            content,
            tool_calls,
            reasoning,
            finish_reason,
        } => {
            let mut message = json!({"role": "assistant", "content": content});
            if !tool_calls.is_empty() {
                message["tool_calls"] = Value::Array(tool_calls);
            }
            if let Some(reasoning) = reasoning {
                message["reasoning_content"] = Value::String(reasoning);
            }
            let completion_tokens = message.to_string().len() as u64 / 4;
            let prompt_tokens = prompt_bytes as u64 / 4;
            let count = state.count.load(Ordering::Relaxed);
            let answer = json!({
                "id": format!("chatcmpl-fake-{count}"),
                "object": "chat.completion",
                "created": 0,
                "model": seen.body.get("model").cloned().unwrap_or(Value::Null),
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            });
            Ok(respond(StatusCode::OK, answer.to_string()))
        }
    }
}

impl State {
    fn note(&self, mut found: Vec<String>) {
        if found.is_empty() {
            return;
        }
        if let Ok(mut violations) = self.violations.lock() {
            violations.append(&mut found);
        }
    }
}

/// The protocol checks listed in the crate documentation.
fn check(config: &FakeConfig, body: &Value, violations: &mut Vec<String>) {
    let Some(object) = body.as_object() else {
        violations.push("body is not an object".to_owned());
        return;
    };
    match (
        object.get("model").and_then(Value::as_str),
        &config.expect_model,
    ) {
        (None, _) => violations.push("no model".to_owned()),
        (Some(model), Some(expected)) if model != expected => {
            violations.push(format!("model {model:?}, expected {expected:?}"));
        }
        _ => {}
    }
    if let Some(n) = object.get("n")
        && n.as_u64() != Some(1)
    {
        violations.push(format!("n = {n}"));
    }
    if let Some(tools) = object.get("tools") {
        let ok = tools.as_array().is_some_and(|tools| {
            tools.iter().all(|tool| {
                tool["type"] == "function" && tool["function"]["name"].as_str().is_some()
            })
        });
        if !ok {
            violations.push("tools is not an array of function tools".to_owned());
        }
    }
    let Some(messages) = object.get("messages").and_then(Value::as_array) else {
        violations.push("no messages array".to_owned());
        return;
    };
    if messages.is_empty() {
        violations.push("messages is empty".to_owned());
        return;
    }
    if !matches!(messages[0]["role"].as_str(), Some("system" | "user")) {
        violations.push(format!("first message is {}", messages[0]["role"]));
    }
    // Calls awaiting answers, in order; every call id of the conversation so far.
    let mut open: Vec<String> = Vec::new();
    let mut all_ids: Vec<String> = Vec::new();
    let mut bytes = 0usize;
    for (index, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        let Some(content) = message["content"].as_str() else {
            violations.push(format!("message {index} ({role}) content is not a string"));
            continue;
        };
        bytes += content.len()
            + message["reasoning_content"].as_str().map_or(0, str::len)
            + message["tool_calls"].as_array().map_or(0, |calls| {
                calls
                    .iter()
                    .map(|call| {
                        call["function"]["name"].as_str().map_or(0, str::len)
                            + call["function"]["arguments"].as_str().map_or(0, str::len)
                    })
                    .sum()
            });
        match role {
            "tool" => {
                let id = message["tool_call_id"].as_str().unwrap_or_default();
                if open.first().map(String::as_str) == Some(id) {
                    open.remove(0);
                } else {
                    violations.push(format!(
                        "message {index}: tool answer {id:?} where {open:?} were awaited"
                    ));
                }
            }
            "system" | "user" | "assistant" => {
                if !open.is_empty() {
                    violations.push(format!(
                        "message {index} ({role}) before calls {open:?} were answered"
                    ));
                    open.clear();
                }
                if role == "assistant" {
                    open = check_calls(index, message, violations);
                    // `all_ids` holds earlier messages' ids only (a repeat within this message
                    // is check_calls' to report).
                    for id in &open {
                        if all_ids.contains(id) {
                            violations.push(format!(
                                "message {index}: call id {id:?} was used by an earlier message"
                            ));
                        }
                    }
                    all_ids.extend(open.iter().cloned());
                }
            }
            other => violations.push(format!("message {index} has role {other:?}")),
        }
    }
    if !open.is_empty() {
        violations.push(format!("request ends with calls {open:?} unanswered"));
    }
    bytes += object
        .get("tools")
        .map_or(0, |tools| tools.to_string().len());
    if let Some(budget) = config.max_prompt_tokens
        && bytes as u64 / 4 > budget
    {
        violations.push(format!(
            "prompt of {bytes} content bytes exceeds the {budget}-token budget"
        ));
    }
}

fn check_calls(index: usize, message: &Value, violations: &mut Vec<String>) -> Vec<String> {
    let Some(calls) = message.get("tool_calls") else {
        return Vec::new();
    };
    let Some(calls) = calls.as_array() else {
        violations.push(format!("message {index}: tool_calls is not an array"));
        return Vec::new();
    };
    let mut ids = Vec::new();
    for call in calls {
        let id = call["id"].as_str().unwrap_or_default().to_owned();
        if id.is_empty() || ids.contains(&id) {
            violations.push(format!(
                "message {index}: missing or repeated call id {id:?}"
            ));
        }
        if call["type"] != "function"
            || call["function"]["name"].as_str().is_none()
            || call["function"]["arguments"].as_str().is_none()
        {
            violations.push(format!("message {index}: malformed call {call}"));
        }
        ids.push(id);
    }
    ids
}

/// A scripted policy: per conversation (keyed by its first user message), the replies in order,
/// one per request — a retried request takes the next reply, so `[429, answer]` is "fail once,
/// then answer". When a script runs out, the fake answers `done` and records a violation.
#[derive(Debug, Default)]
pub struct Script {
    replies: HashMap<String, Vec<Reply>>,
}

impl Script {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// The replies to the conversation whose first user message is `prompt`.
    pub fn on(mut self, prompt: impl Into<String>, replies: Vec<Reply>) -> Self {
        self.replies.insert(prompt.into(), replies);
        self
    }

    /// The policy (plus a list where script overruns are noted).
    pub fn into_policy(
        self,
    ) -> (
        impl Fn(&Request) -> Reply + Send + Sync,
        Arc<Mutex<Vec<String>>>,
    ) {
        let cursors: Mutex<HashMap<String, usize>> = Mutex::new(HashMap::new());
        let overruns = Arc::new(Mutex::new(Vec::new()));
        let noted = Arc::clone(&overruns);
        let replies = self.replies;
        let policy = move |request: &Request| {
            let index = cursors.lock().map_or(0, |mut cursors| {
                let cursor = cursors.entry(request.key.clone()).or_insert(0);
                *cursor += 1;
                *cursor - 1
            });
            match replies.get(&request.key).and_then(|list| list.get(index)) {
                Some(reply) => reply.clone(),
                None => {
                    if let Ok(mut noted) = noted.lock() {
                        noted.push(format!(
                            "script for {:?} ran out at request {index}",
                            request.key
                        ));
                    }
                    Reply::text("done")
                }
            }
        };
        (policy, overruns)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn violations_of(body: Value, config: &FakeConfig) -> Vec<String> {
        let mut found = Vec::new();
        check(config, &body, &mut found);
        found
    }

    fn call(id: &str) -> Value {
        json!({"id": id, "type": "function", "function": {"name": "terminal", "arguments": "{}"}})
    }

    #[test]
    fn a_well_formed_conversation_passes() {
        let body = json!({"model": "m", "n": 1, "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "", "tool_calls": [call("a"), call("b")]},
            {"role": "tool", "tool_call_id": "a", "content": "x"},
            {"role": "tool", "tool_call_id": "b", "content": "y"},
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": "more"}]});
        let config = FakeConfig {
            expect_model: Some("m".into()),
            ..FakeConfig::default()
        };
        assert_eq!(violations_of(body, &config), Vec::<String>::new());
    }

    #[test]
    fn every_breach_is_caught() {
        let config = FakeConfig {
            expect_model: Some("m".into()),
            max_prompt_tokens: Some(2),
            ..FakeConfig::default()
        };
        let cases = [
            json!({"model": "x", "messages": [{"role": "user", "content": "u"}]}),
            json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "u"}]}),
            json!({"model": "m", "messages": []}),
            json!({"model": "m", "messages": [{"role": "tool", "tool_call_id": "a", "content": ""}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": null}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": "u"},
                {"role": "assistant", "content": "", "tool_calls": [call("a")]}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": "u"},
                {"role": "assistant", "content": "", "tool_calls": [call("a"), call("a")]},
                {"role": "tool", "tool_call_id": "a", "content": ""},
                {"role": "tool", "tool_call_id": "a", "content": ""}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": "u"},
                {"role": "assistant", "content": "", "tool_calls": [call("a"), call("b")]},
                {"role": "tool", "tool_call_id": "b", "content": ""},
                {"role": "tool", "tool_call_id": "a", "content": ""}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": "u"},
                {"role": "assistant", "content": "", "tool_calls": [call("a")]},
                {"role": "user", "content": "?"}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": "0123456789abc"}]}),
            json!({"model": "m", "tools": [{"type": "x"}], "messages": [{"role": "user", "content": "u"}]}),
        ];
        for body in cases {
            assert!(!violations_of(body.clone(), &config).is_empty(), "{body}");
        }
    }
}
