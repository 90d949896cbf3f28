//! The v1 lease API's request and response bodies.
//!
//! A contract: fields may be added, none renamed. Requests ignore unknown fields (so newer clients
//! work with older servers); optional fields have server-side defaults documented here.

use serde::Deserialize;
use serde::Serialize;

/// `POST /v1/leases`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateLease {
    /// Lease lifetime in seconds (default 600); renew before it runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<f64>,
    /// How long to wait for a free slot, in seconds (default 30); then 503 `no_slot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_s: Option<f64>,
    /// Whether commands in the slot may use the network (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<bool>,
}

/// A granted lease (`201` from `POST /v1/leases`, `200` from renew).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    /// Names the lease in every later call.
    pub lease_id: String,
    /// The slot it holds (`slot_0`…).
    pub slot_id: String,
    /// When the lease expires unless renewed (RFC 3339, UTC).
    pub expires_at: String,
}

/// `POST /v1/leases/{id}/renew`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenewLease {
    /// New lifetime from now, in seconds (default: the lease's original ttl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<f64>,
}

/// `POST /v1/leases/{id}/exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecBody {
    /// The command, run by bash in the lease's session.
    pub command: String,
    /// Time limit in seconds (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    /// Text piped to the command's stdin, which is then closed (default: stdin is `/dev/null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Output cap in characters (default 50,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_chars: Option<u64>,
}

impl ExecBody {
    /// `command` with every option at the server's default.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            timeout_s: None,
            stdin: None,
            max_output_chars: None,
        }
    }
}

/// `POST /v1/leases/{id}/interrupt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Interrupted {
    /// Whether a command was running (and is now being stopped).
    pub interrupted: bool,
}

/// `DELETE /v1/leases/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Released {
    /// The released lease.
    pub lease_id: String,
    /// The slot, now reset and free (or quarantined if the reset failed).
    pub slot_id: String,
}

/// Every error: `{"error": {"code": "...", "message": "..."}}` with a 4xx/5xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// A stable, machine-readable code (see `codes`).
    pub code: String,
    /// A human-readable explanation; never internals.
    pub message: String,
}

/// The stable error codes.
pub mod codes {
    /// No slot became free within `wait_s` (503).
    pub const NO_SLOT: &str = "no_slot";
    /// The lease does not exist, expired or was released (404).
    pub const UNKNOWN_LEASE: &str = "unknown_lease";
    /// The lease's slot was lost (its server died); the pool answers this (410).
    pub const SLOT_LOST: &str = "slot_lost";
    /// The body is not valid JSON (400).
    pub const INVALID_JSON: &str = "invalid_json";
    /// The body is JSON but not the expected shape or values (422).
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// The body is over the size limit (413).
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// A missing or wrong bearer token (401).
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// A path resolving outside the workspace (403).
    pub const PATH_OUTSIDE_WORKSPACE: &str = "path_outside_workspace";
    /// No such file, or no such route (404).
    pub const NOT_FOUND: &str = "not_found";
    /// A file over the size limit of the operation (413).
    pub const FILE_TOO_LARGE: &str = "file_too_large";
    /// The path exists but is not a regular file (400).
    pub const NOT_A_FILE: &str = "not_a_file";
    /// The server failed; details are in its log, not here (500).
    pub const INTERNAL: &str = "internal";
}

/// Whether an `Accept` header value asks for the streaming form of exec.
pub fn wants_event_stream<'a>(accept_values: impl IntoIterator<Item = &'a str>) -> bool {
    accept_values
        .into_iter()
        .any(|value| value.contains("text/event-stream"))
}

/// Whether an `Authorization` header value presents `token` as a bearer token. Compares without
/// an early exit, so response time does not leak how much of a guess matched.
pub fn bearer_matches(authorization: Option<&str>, token: &str) -> bool {
    let Some(presented) = authorization.and_then(|value| value.strip_prefix("Bearer ")) else {
        return false;
    };
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `"ok"`.
    pub status: String,
    /// Number of slots.
    pub slots: usize,
    /// Slots free to lease.
    pub free: usize,
    /// Slots held by a lease.
    pub leased: usize,
    /// Slots taken out of service because their reset failed.
    pub quarantined: Vec<String>,
    /// How commands are isolated: `"bwrap"` or `"none"`.
    pub isolation: String,
    /// Limits in force.
    pub limits: HealthLimits,
}

/// The limits a slot's commands run under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthLimits {
    /// Whether commands may use the network unless a lease asks for it.
    pub network_default: bool,
    /// The largest accepted `timeout_s`.
    pub max_timeout_s: f64,
    /// The largest accepted `max_output_chars`.
    pub max_output_chars: u64,
    /// The request body limit in bytes.
    pub max_body_bytes: usize,
    /// The cgroup layout enforcing the resource limits (`"v1"`, `"v2"`), or `null` when none are.
    #[serde(default)]
    pub cgroups: Option<String>,
    /// Memory limit per slot in bytes, if enforced.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Process (and thread) limit per slot, if enforced.
    #[serde(default)]
    pub pids: Option<u64>,
    /// CPU limit per slot in thousandths of a core, if enforced.
    #[serde(default)]
    pub cpu_millis: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_and_event_stream_accept() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("Basic czNjcmV0"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
        assert!(wants_event_stream([
            "application/json",
            "text/event-stream"
        ]));
        assert!(!wants_event_stream(["application/json"]));
    }
}
