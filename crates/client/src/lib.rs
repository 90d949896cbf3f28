//! A client for slotbox's v1 lease API, which `slotbox serve` and the slot pool both speak.
//!
//! Errors are typed: a server's `{"error": {"code", "message"}}` becomes `Error::Api` with an
//! `ErrorCode`, so callers match on `ErrorCode::NoSlot` or `ErrorCode::SlotLost` instead of
//! parsing text. Requests carry no fixed deadline: an exec is allowed its command's own timeout
//! plus a margin (the seed client's fixed 30 s deadline cut long commands and re-sent them).
//!
//! Architecture invariant: depends on the protocol crate and HTTP only; never on the server or the
//! execution core (those are dev-dependencies, for tests).

use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use slotbox_protocol::ExecResult;
use slotbox_protocol::v1::CreateLease;
use slotbox_protocol::v1::ErrorBody;
use slotbox_protocol::v1::ExecBody;
use slotbox_protocol::v1::Health;
use slotbox_protocol::v1::Interrupted;
use slotbox_protocol::v1::Lease;
use slotbox_protocol::v1::Released;
use slotbox_protocol::v1::RenewLease;
use slotbox_protocol::v1::codes;

/// Time allowed beyond a command's own timeout for the server to kill it and answer.
const EXEC_MARGIN: Duration = Duration::from_secs(30);
/// Deadline of calls that do not run commands.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);
/// The server's default command timeout, assumed when a request sets none.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A server's error codes, as an enum (unknown codes kept as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// No slot became free in time.
    NoSlot,
    /// The lease is unknown, expired or released.
    UnknownLease,
    /// The lease's slot was lost (its server died).
    SlotLost,
    /// The body was not JSON.
    InvalidJson,
    /// The body had wrong fields or values.
    InvalidRequest,
    /// The body was too large.
    BodyTooLarge,
    /// Missing or wrong token.
    Unauthorized,
    /// A path outside the workspace.
    PathOutsideWorkspace,
    /// No such file or route.
    NotFound,
    /// Not a regular file.
    NotAFile,
    /// A file over a size limit.
    FileTooLarge,
    /// The server failed.
    Internal,
    /// A code this client does not know.
    Other(String),
}

impl ErrorCode {
    fn parse(code: &str) -> Self {
        match code {
            codes::NO_SLOT => ErrorCode::NoSlot,
            codes::UNKNOWN_LEASE => ErrorCode::UnknownLease,
            codes::SLOT_LOST => ErrorCode::SlotLost,
            codes::INVALID_JSON => ErrorCode::InvalidJson,
            codes::INVALID_REQUEST => ErrorCode::InvalidRequest,
            codes::BODY_TOO_LARGE => ErrorCode::BodyTooLarge,
            codes::UNAUTHORIZED => ErrorCode::Unauthorized,
            codes::PATH_OUTSIDE_WORKSPACE => ErrorCode::PathOutsideWorkspace,
            codes::NOT_FOUND => ErrorCode::NotFound,
            codes::NOT_A_FILE => ErrorCode::NotAFile,
            codes::FILE_TOO_LARGE => ErrorCode::FileTooLarge,
            codes::INTERNAL => ErrorCode::Internal,
            other => ErrorCode::Other(other.to_owned()),
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error.
    #[error("{status} {code:?}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("request to {url} failed: {source}")]
    Transport {
        /// The URL called.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered something this client cannot read.
    #[error("unexpected answer from {url}: {detail}")]
    Protocol {
        /// The URL called.
        url: String,
        /// What was wrong.
        detail: String,
    },
}

impl Error {
    /// The API error code, if the server answered with one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(code),
            Error::Transport { .. } | Error::Protocol { .. } => None,
        }
    }

    /// Whether asking again later may succeed: the server could not be reached or failed
    /// (5xx, e.g. a pool restarting or a proxy without its upstream), as opposed to an answer
    /// about the request itself (bad body, wrong token, unknown lease).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api { status, .. } => *status >= 500,
            Error::Protocol { .. } => false,
        }
    }
}

/// Results of client calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A v1 API client. Cheap to clone (connections are pooled and shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for the server at `base` (`http://127.0.0.1:8080`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.into().trim_end_matches('/').to_owned(),
            token: None,
        }
    }

    /// Sends `Authorization: Bearer TOKEN` with every call.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Duration,
    ) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}{path}", self.base);
        let mut builder = self.http.request(method, &url).timeout(timeout);
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        (url, builder)
    }

    async fn send(url: &str, builder: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = builder.send().await.map_err(|source| Error::Transport {
            url: url.to_owned(),
            source,
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Error::Api {
                status,
                code: ErrorCode::parse(&body.error.code),
                message: body.error.message,
            },
            Err(_) => Error::Protocol {
                url: url.to_owned(),
                detail: format!("status {status} with a body that is not an error: {text:.200}"),
            },
        })
    }

    async fn json<T: DeserializeOwned>(url: &str, builder: reqwest::RequestBuilder) -> Result<T> {
        let response = Self::send(url, builder).await?;
        let bytes = response.bytes().await.map_err(|source| Error::Transport {
            url: url.to_owned(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|error| Error::Protocol {
            url: url.to_owned(),
            detail: error.to_string(),
        })
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health> {
        let (url, builder) = self.request(reqwest::Method::GET, "/v1/health", CONTROL_TIMEOUT);
        Self::json(&url, builder).await
    }

    /// `POST /v1/leases`; waits up to the request's `wait_s` (server default 30 s) for a slot.
    pub async fn lease(&self, request: &CreateLease) -> Result<Lease> {
        let wait = Duration::from_secs_f64(request.wait_s.unwrap_or(30.0).max(0.0));
        let (url, builder) =
            self.request(reqwest::Method::POST, "/v1/leases", CONTROL_TIMEOUT + wait);
        Self::json(&url, builder.json(request)).await
    }

    /// `POST /v1/leases/{id}/renew`.
    pub async fn renew(&self, lease_id: &str, ttl: Option<Duration>) -> Result<Lease> {
        let body = RenewLease {
            ttl_s: ttl.map(|ttl| ttl.as_secs_f64()),
        };
        let (url, builder) = self.request(
            reqwest::Method::POST,
            &format!("/v1/leases/{lease_id}/renew"),
            CONTROL_TIMEOUT,
        );
        Self::json(&url, builder.json(&body)).await
    }

    fn exec_deadline(body: &ExecBody) -> Duration {
        // An out-of-range value is the server's to refuse; the deadline just must not panic.
        body.timeout_s
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .unwrap_or(DEFAULT_COMMAND_TIMEOUT)
            .saturating_add(EXEC_MARGIN)
    }

    /// `POST /v1/leases/{id}/exec`: runs a command in the lease's session.
    pub async fn exec(&self, lease_id: &str, body: &ExecBody) -> Result<ExecResult> {
        let (url, builder) = self.request(
            reqwest::Method::POST,
            &format!("/v1/leases/{lease_id}/exec"),
            Self::exec_deadline(body),
        );
        Self::json(&url, builder.json(body)).await
    }

    /// The same call with `Accept: text/event-stream`: `on_output` gets the output as it comes,
    /// then the result is returned.
    pub async fn exec_streaming(
        &self,
        lease_id: &str,
        body: &ExecBody,
        mut on_output: impl FnMut(&str),
    ) -> Result<ExecResult> {
        let url = format!("{}/v1/leases/{lease_id}/exec", self.base);
        let mut events = SseParser::default();
        let stream = self.exec_event_stream(lease_id, body).await?;
        futures_util::pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            for (name, data) in events.push(&chunk) {
                match name.as_str() {
                    "output" => {
                        let value: serde_json::Value =
                            serde_json::from_str(&data).map_err(|error| Error::Protocol {
                                url: url.clone(),
                                detail: error.to_string(),
                            })?;
                        on_output(value["chunk"].as_str().unwrap_or_default());
                    }
                    "result" => {
                        return serde_json::from_str(&data).map_err(|error| Error::Protocol {
                            url: url.clone(),
                            detail: error.to_string(),
                        });
                    }
                    "error" => {
                        let body: ErrorBody =
                            serde_json::from_str(&data).map_err(|error| Error::Protocol {
                                url: url.clone(),
                                detail: error.to_string(),
                            })?;
                        return Err(Error::Api {
                            status: 200,
                            code: ErrorCode::parse(&body.error.code),
                            message: body.error.message,
                        });
                    }
                    _ => {}
                }
            }
        }
        Err(Error::Protocol {
            url,
            detail: "the stream ended without a result".to_owned(),
        })
    }

    /// The streaming exec call's raw `text/event-stream` body, for proxies that pass it on as is
    /// (the slot pool). Errors before the stream starts are returned as usual.
    pub async fn exec_event_stream(
        &self,
        lease_id: &str,
        body: &ExecBody,
    ) -> Result<impl futures_util::Stream<Item = Result<Vec<u8>>> + Send + 'static> {
        let (url, builder) = self.request(
            reqwest::Method::POST,
            &format!("/v1/leases/{lease_id}/exec"),
            Self::exec_deadline(body),
        );
        let response = Self::send(
            &url,
            builder.header("accept", "text/event-stream").json(body),
        )
        .await?;
        Ok(response.bytes_stream().map(move |chunk| {
            chunk
                .map(|bytes| bytes.to_vec())
                .map_err(|source| Error::Transport {
                    url: url.clone(),
                    source,
                })
        }))
    }

    /// `POST /v1/leases/{id}/interrupt`; whether a command was running.
    pub async fn interrupt(&self, lease_id: &str) -> Result<bool> {
        let (url, builder) = self.request(
            reqwest::Method::POST,
            &format!("/v1/leases/{lease_id}/interrupt"),
            CONTROL_TIMEOUT,
        );
        let answer: Interrupted = Self::json(&url, builder).await?;
        Ok(answer.interrupted)
    }

    /// `DELETE /v1/leases/{id}`: the slot is reset and freed.
    pub async fn release(&self, lease_id: &str) -> Result<Released> {
        let (url, builder) = self.request(
            reqwest::Method::DELETE,
            &format!("/v1/leases/{lease_id}"),
            CONTROL_TIMEOUT,
        );
        Self::json(&url, builder).await
    }

    /// `GET /v1/leases/{id}/files?path=…`: a workspace file's bytes.
    pub async fn read_file(&self, lease_id: &str, path: &str) -> Result<Vec<u8>> {
        let (url, builder) = self.request(
            reqwest::Method::GET,
            &format!("/v1/leases/{lease_id}/files"),
            CONTROL_TIMEOUT,
        );
        let response = Self::send(&url, builder.query(&[("path", path)])).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|source| Error::Transport { url, source })?;
        Ok(bytes.to_vec())
    }

    /// `PUT /v1/leases/{id}/files?path=…`: writes a workspace file.
    pub async fn write_file(&self, lease_id: &str, path: &str, content: Vec<u8>) -> Result<()> {
        let (url, builder) = self.request(
            reqwest::Method::PUT,
            &format!("/v1/leases/{lease_id}/files"),
            CONTROL_TIMEOUT,
        );
        Self::send(&url, builder.query(&[("path", path)]).body(content)).await?;
        Ok(())
    }
}

/// Incremental parser of `text/event-stream`: bytes in, complete `(event, data)` pairs out.
#[derive(Debug, Default)]
struct SseParser {
    pending: Vec<u8>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = find_blank_line(&self.pending) {
            let block: Vec<u8> = self.pending.drain(..end.0).collect();
            self.pending.drain(..end.1);
            let text = String::from_utf8_lossy(&block);
            let mut name = String::from("message");
            let mut data: Vec<&str> = Vec::new();
            for line in text.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim_start().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if !data.is_empty() {
                events.push((name, data.join("\n")));
            }
        }
        events
    }
}

/// The end of the first event block: (block length, separator length).
fn find_blank_line(bytes: &[u8]) -> Option<(usize, usize)> {
    let lf = bytes
        .windows(2)
        .position(|window| window == b"\n\n")
        .map(|at| (at, 2));
    let crlf = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| (at, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: output\ndata: {\"chunk\"").is_empty());
        let events = parser.push(b": \"a\"}\n\nevent: result\r\ndata: {}\r\n\r\n: keep-alive\n\n");
        assert_eq!(
            events,
            vec![
                ("output".to_owned(), "{\"chunk\": \"a\"}".to_owned()),
                ("result".to_owned(), "{}".to_owned())
            ]
        );
    }

    #[test]
    fn error_codes_round_trip() {
        assert_eq!(ErrorCode::parse("no_slot"), ErrorCode::NoSlot);
        assert_eq!(ErrorCode::parse("slot_lost"), ErrorCode::SlotLost);
        assert_eq!(
            ErrorCode::parse("new_code"),
            ErrorCode::Other("new_code".to_owned())
        );
    }
}
