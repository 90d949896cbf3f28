//! The model side: one OpenAI-compatible `/v1/chat/completions` request per turn.
//!
//! Transient failures (429, 5xx, 408, a dropped or refused connection, a request that timed
//! out) are retried with backoff inside the rollout's deadline; other 4xx answers are final.
//! hermes gave up on the first error; at hundreds of concurrent rollouts a model server's
//! brief overload must not cost trajectories.
//!
//! Responses are read leniently, the way real servers differ: `content` as a string or a list of
//! text parts, tool calls with `function.name` or a top-level `name`, arguments as a string or
//! an object, missing ids.

use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;

use crate::budget::Deadline;
use crate::budget::RetryPolicy;
use crate::error::Error;
use crate::error::Result;
use crate::message::Message;
use crate::message::ToolCall;

/// How to reach the model and what to ask of it.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    /// The OpenAI base URL (`http://host:8000/v1`) or the full `…/chat/completions` URL.
    pub url: String,
    /// The `model` field.
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    /// Sampling temperature (left to the server when unset).
    pub temperature: Option<f64>,
    /// Per-turn completion limit (left to the server when unset).
    pub max_tokens: Option<u32>,
    /// Extra top-level request fields, forwarded unchanged (e.g. `top_p`, vLLM's
    /// `chat_template_kwargs`); they cannot replace the fields above.
    pub extra_body: serde_json::Map<String, Value>,
    /// Deadline of one request (each retry gets a fresh one, all within the rollout's).
    pub request_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

/// Token counts a server reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: u64,
}

/// One turn's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The text (empty when there was none).
    pub content: String,
    /// Reasoning from `reasoning_content`, `reasoning` or `reasoning_details[].text`.
    pub reasoning: Option<String>,
    /// Native tool calls, ids filled in where the server gave none.
    pub tool_calls: Vec<ToolCall>,
    /// `stop`, `tool_calls`, `length`, … as the server said.
    pub finish_reason: Option<String>,
    /// Token counts, when reported.
    pub usage: Option<Usage>,
    /// Requests made for this turn (1 without retries).
    pub attempts: u32,
    /// Time on the wire: from sending each attempt to its last response byte, plus backoff
    /// waits. Building the request and reading the answer are the engine's own time.
    pub wire: Duration,
}

/// A turn whose model request failed, with what it cost.
#[derive(Debug)]
pub struct Failed {
    /// Why.
    pub error: Error,
    /// Requests made.
    pub attempts: u32,
    /// Time on the wire and in backoff.
    pub wire: Duration,
}

/// A chat-completions client for one model. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ModelClient {
    http: reqwest::Client,
    url: String,
    settings: std::sync::Arc<ModelSettings>,
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    n: u32,
    /// `extra_body` without the loop's own keys (removed once, in `ModelClient::new`).
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, Value>,
}

/// Retryable or not, and what to say.
enum Failure {
    Retry {
        detail: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    Final(Error),
}

impl ModelClient {
    /// A client; fails on a URL that is not http(s).
    pub fn new(mut settings: ModelSettings) -> Result<Self> {
        // The loop's own fields win: extra_body adds fields, it does not replace these.
        for owned in ["model", "messages", "tools", "n"] {
            settings.extra_body.remove(owned);
        }
        if settings.temperature.is_some() {
            settings.extra_body.remove("temperature");
        }
        if settings.max_tokens.is_some() {
            settings.extra_body.remove("max_tokens");
        }
        let base = settings.url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::InvalidSetting(format!(
                "model URL {base:?} is not an http(s) URL"
            )));
        }
        let url = if base.ends_with("/chat/completions") {
            base.to_owned()
        } else {
            format!("{base}/chat/completions")
        };
        let http = reqwest::Client::builder()
            // Hundreds of rollouts talk to one server: keep their connections.
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|error| Error::InvalidSetting(format!("HTTP client: {error}")))?;
        Ok(Self {
            http,
            url,
            settings: std::sync::Arc::new(settings),
        })
    }

    /// The settings this client was made with.
    pub fn settings(&self) -> &ModelSettings {
        &self.settings
    }

    /// Sends `messages` (and `tools`, if any) and returns the first choice, retrying transient
    /// failures until the retry budget or `deadline` runs out.
    pub async fn complete(
        &self,
        messages: &[Message],
        tools: Option<&Value>,
        deadline: Deadline,
    ) -> std::result::Result<Completion, Failed> {
        let mut attempts = 0u32;
        let mut wire = Duration::ZERO;
        let result = self
            .complete_counted(messages, tools, deadline, &mut attempts, &mut wire)
            .await;
        result.map_err(|error| Failed {
            error,
            attempts,
            wire,
        })
    }

    async fn complete_counted(
        &self,
        messages: &[Message],
        tools: Option<&Value>,
        deadline: Deadline,
        attempts: &mut u32,
        wire: &mut Duration,
    ) -> Result<Completion> {
        let body = self.body(messages, tools)?;
        let policy = self.settings.retry;
        loop {
            if deadline.passed() {
                return Err(Error::Deadline(deadline.total()));
            }
            *attempts += 1;
            let attempts = *attempts;
            let (result, took) = self.attempt(body.clone(), deadline).await;
            *wire += took;
            let failure =
                match result.and_then(|bytes| parse_completion(&bytes).map_err(Failure::Final)) {
                    Ok(mut completion) => {
                        completion.attempts = attempts;
                        completion.wire = *wire;
                        return Ok(completion);
                    }
                    Err(failure) => failure,
                };
            let (detail, status, retry_after) = match failure {
                Failure::Final(Error::ModelStatus { status, body, .. }) => {
                    return Err(Error::ModelStatus {
                        status,
                        body,
                        attempts,
                    });
                }
                Failure::Final(error) => return Err(error),
                Failure::Retry {
                    detail,
                    status,
                    retry_after,
                } => (detail, status, retry_after),
            };
            if attempts > policy.max_retries {
                return Err(match status {
                    Some(status) => Error::ModelStatus {
                        status,
                        body: detail,
                        attempts,
                    },
                    None => Error::ModelTransport { detail, attempts },
                });
            }
            let wait = policy.backoff(attempts, retry_after);
            if wait >= deadline.remaining() {
                return Err(Error::Deadline(deadline.total()));
            }
            tracing::debug!(attempts, ?wait, %detail, "retrying the model request");
            tokio::time::sleep(wait).await;
            *wire += wait;
        }
    }

    /// The request body, serialised once per turn straight from the conversation.
    fn body(&self, messages: &[Message], tools: Option<&Value>) -> Result<bytes::Bytes> {
        let settings = &self.settings;
        let request = Request {
            model: &settings.model,
            messages,
            tools,
            temperature: settings.temperature,
            max_tokens: settings.max_tokens,
            n: 1,
            extra: &settings.extra_body,
        };
        serde_json::to_vec(&request)
            .map(bytes::Bytes::from)
            .map_err(|error| Error::InvalidSetting(format!("request: {error}")))
    }

    /// One request: the body of a 2xx answer, or why not; and the time it took on the wire.
    async fn attempt(
        &self,
        body: bytes::Bytes,
        deadline: Deadline,
    ) -> (std::result::Result<bytes::Bytes, Failure>, Duration) {
        let started = tokio::time::Instant::now();
        let result = self.exchange(body, deadline).await;
        (result, started.elapsed())
    }

    async fn exchange(
        &self,
        body: bytes::Bytes,
        deadline: Deadline,
    ) -> std::result::Result<bytes::Bytes, Failure> {
        let timeout = self.settings.request_timeout.min(deadline.remaining());
        let mut request = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(timeout)
            .body(body);
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|error| transport_failure(&error, deadline))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, std::time::SystemTime::now()));
        let bytes = response
            .bytes()
            .await
            .map_err(|error| transport_failure(&error, deadline))?;
        if status.is_success() {
            return Ok(bytes);
        }
        let text = String::from_utf8_lossy(&bytes);
        let excerpt: String = text.chars().take(500).collect();
        let code = status.as_u16();
        if code == 429 || code == 408 || status.is_server_error() {
            return Err(Failure::Retry {
                detail: excerpt,
                status: Some(code),
                retry_after,
            });
        }
        if code == 400 && mentions_context_length(&text) {
            return Err(Failure::Final(Error::ModelContext { body: excerpt }));
        }
        Err(Failure::Final(Error::ModelStatus {
            status: code,
            body: excerpt,
            attempts: 1,
        }))
    }
}

/// A request that broke: the rollout's deadline if that is what cut it, else worth a retry.
fn transport_failure(error: &reqwest::Error, deadline: Deadline) -> Failure {
    if error.is_timeout() && deadline.passed() {
        return Failure::Final(Error::Deadline(deadline.total()));
    }
    Failure::Retry {
        detail: transport_detail(error),
        status: None,
        retry_after: None,
    }
}

fn transport_detail(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut detail = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delay seconds, or an HTTP date (the wait until
/// then, none if it has passed).
fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// vLLM, SGLang, llama.cpp and OpenAI word a too-long prompt differently; all say one of these.
fn mentions_context_length(body: &str) -> bool {
    let lower = body.to_ascii_lowercase();
    [
        "context length",
        "context_length",
        "context window",
        "maximum context",
        "prompt is too long",
        "too many tokens",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<ResponseMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Value,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    reasoning_details: Option<Vec<Value>>,
}

/// Reads a chat completion body.
pub fn parse_completion(bytes: &[u8]) -> Result<Completion> {
    let response: Response =
        serde_json::from_slice(bytes).map_err(|error| Error::ModelResponse {
            detail: error.to_string(),
        })?;
    let choice = response
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| Error::ModelResponse {
            detail: "no choices".to_owned(),
        })?;
    let message = choice.message.ok_or_else(|| Error::ModelResponse {
        detail: "the first choice has no message".to_owned(),
    })?;
    let content = match &message.content {
        Value::String(text) => text.clone(),
        // Content parts: the text ones, in order.
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    let reasoning = [message.reasoning_content, message.reasoning]
        .into_iter()
        .flatten()
        .find(|text| !text.is_empty())
        .or_else(|| {
            message
                .reasoning_details
                .iter()
                .flatten()
                .find_map(|detail| {
                    detail
                        .get("text")
                        .and_then(Value::as_str)
                        .filter(|text| !text.is_empty())
                        .map(str::to_owned)
                })
        });
    let tool_calls = message
        .tool_calls
        .unwrap_or_default()
        .iter()
        .map(native_call)
        .collect::<Result<Vec<_>>>()?;
    Ok(Completion {
        content,
        reasoning,
        tool_calls,
        finish_reason: choice.finish_reason,
        usage: response.usage,
        attempts: 1,
        wire: Duration::ZERO,
    })
}

/// One native call, object or loose dict (MAIN04's normalisation): name from `function.name` or
/// `name`, arguments from `function.arguments` or `arguments` (objects serialised), id or a new
/// `call_` id.
fn native_call(value: &Value) -> Result<ToolCall> {
    let function = value.get("function");
    let field = |key: &str| {
        function
            .and_then(|function| function.get(key))
            .filter(|value| !value.is_null())
            .or_else(|| value.get(key).filter(|value| !value.is_null()))
    };
    let name = field("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let arguments = match field("arguments") {
        None => "{}".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => slotbox_toolcall::python_json(other, false),
    };
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map_or_else(new_call_id, str::to_owned);
    Ok(ToolCall::function(id, name, arguments))
}

/// A fresh `call_` + 8 hex id, the reference's shape.
pub fn new_call_id() -> String {
    let simple = uuid::Uuid::new_v4().simple().to_string();
    format!("call_{}", &simple[..8])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        // 1994-11-06T08:49:37Z, the RFC's example date.
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past: no wait"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn reads_native_calls_in_every_shape_servers_send() {
        let body = serde_json::json!({
            "choices": [{"finish_reason": "tool_calls", "message": {
                "content": null,
                "reasoning_content": "",
                "reasoning": "thinking",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "terminal", "arguments": "{\"command\":\"ls\"}"}},
                    {"name": "read_file", "arguments": {"path": "x"}},
                    {"function": {"name": "terminal"}}
                ]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3}
        });
        let completion = parse_completion(body.to_string().as_bytes()).unwrap();
        assert_eq!(completion.content, "");
        assert_eq!(completion.reasoning.as_deref(), Some("thinking"));
        assert_eq!(completion.finish_reason.as_deref(), Some("tool_calls"));
        let calls = &completion.tool_calls;
        assert_eq!(calls[0].id, "a");
        assert_eq!(calls[1].function.name, "read_file");
        assert_eq!(calls[1].function.arguments, "{\"path\": \"x\"}");
        assert!(calls[1].id.starts_with("call_") && calls[1].id.len() == 13);
        assert_eq!(calls[2].function.arguments, "{}");
        assert_eq!(completion.usage.unwrap().completion_tokens, 3);
    }

    #[test]
    fn reads_content_parts_and_reasoning_details() {
        let body = serde_json::json!({"choices": [{"message": {
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "reasoning_details": [{"text": ""}, {"text": "why"}]}}]});
        let completion = parse_completion(body.to_string().as_bytes()).unwrap();
        assert_eq!(completion.content, "ab");
        assert_eq!(completion.reasoning.as_deref(), Some("why"));
    }

    #[test]
    fn refuses_bodies_that_are_not_completions() {
        for body in ["[]", "{\"choices\": []}", "{\"choices\": [{}]}", "nope"] {
            assert!(matches!(
                parse_completion(body.as_bytes()),
                Err(Error::ModelResponse { .. })
            ));
        }
    }

    #[test]
    fn extra_body_adds_fields_but_cannot_replace_the_loops() {
        let mut extra = serde_json::Map::new();
        extra.insert("top_p".into(), Value::from(0.9));
        extra.insert("model".into(), Value::from("other"));
        let client = ModelClient::new(ModelSettings {
            url: "http://127.0.0.1:1/v1/".into(),
            model: "m".into(),
            api_key: None,
            temperature: Some(1.0),
            max_tokens: None,
            extra_body: extra,
            request_timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
        })
        .unwrap();
        assert_eq!(client.url, "http://127.0.0.1:1/v1/chat/completions");
        let body: Value =
            serde_json::from_slice(&client.body(&[Message::user("hi")], None).unwrap()).unwrap();
        assert_eq!(body["model"], "m");
        assert_eq!(body["top_p"], 0.9);
        assert_eq!(body["n"], 1);
        assert!(body.get("tools").is_none() && body.get("max_tokens").is_none());
    }
}
