//! slotbox's slot pool: one v1 lease endpoint, whatever the scale.
//!
//! `slotbox up` runs a `Pool` over servers that a `Scheduler` supplies (the embedded default:
//! `LocalScheduler`, `slotbox serve` child processes) and exposes the same v1 lease API as
//! `slotbox serve` (`router`), so a client never changes when the scale does. Calls on a lease are
//! forwarded to the server that holds it, through `slotbox-client`, with deadlines derived from
//! the command's own timeout.
//!
//! Architecture invariant: the pool never runs a command itself and never depends on the
//! execution core (checked in CI); it only talks to sandbox servers over HTTP.

mod autoscale;
mod docker;
mod http;
mod local;
mod metrics;
mod nomad;
mod pool;
mod scheduler;

pub use autoscale::Autoscale;
pub use autoscale::Decision;
pub use autoscale::History;
pub use autoscale::decide;
pub use autoscale::run as run_autoscaler;
pub use docker::DockerConfig;
pub use docker::DockerScheduler;
pub use docker::LABEL_MANAGED;
pub use docker::LABEL_POOL;
pub use docker::container_spec;
pub use http::router;
pub use local::LocalConfig;
pub use local::LocalScheduler;
pub use nomad::NomadConfig;
pub use nomad::NomadDriver;
pub use nomad::NomadScheduler;
pub use pool::Observation;
pub use pool::Pool;
pub use scheduler::Scheduler;
pub use scheduler::SchedulerFuture;
pub use scheduler::ServerHandle;

use axum::Json;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use slotbox_protocol::v1::ErrorBody;
use slotbox_protocol::v1::ErrorDetail;
use slotbox_protocol::v1::codes;

/// Starts a pool's background work (lease expiry); call once, inside the runtime.
pub fn start_background(pool: &std::sync::Arc<Pool>) {
    tokio::spawn(std::sync::Arc::clone(pool).expire_leases());
}

/// Why a pool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No slot became free in time.
    #[error("no slot became free within {0:?}")]
    NoSlot(std::time::Duration),
    /// Unknown, expired or released lease.
    #[error("unknown lease {0}")]
    UnknownLease(String),
    /// The lease's server died or vanished.
    #[error("the slot of lease {0} was lost with its server; lease a new one")]
    SlotLost(String),
    /// A server answered with an error, passed on as it was.
    #[error("{message}")]
    Server {
        /// Its status.
        status: u16,
        /// Its code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The body is not JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The request is JSON with wrong fields or values.
    #[error("{0}")]
    InvalidRequest(String),
    /// The body is over the limit.
    #[error("request body over the {0}-byte limit")]
    BodyTooLarge(usize),
    /// No such route.
    #[error("not found: {0}")]
    NotFound(String),
    /// The scheduler could not provide a server.
    #[error("scheduler: {0}")]
    Scheduler(String),
    /// The server holding the lease answered too slowly or cut its answer short.
    #[error("the slot's server did not answer in time: {0}")]
    Upstream(String),
    /// The pool is shutting down.
    #[error("the pool is shutting down")]
    ShuttingDown,
    /// The pool failed.
    #[error("{0}")]
    Internal(String),
}

/// Results of pool operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn from_server(error: slotbox_client::Error) -> Self {
        match error {
            slotbox_client::Error::Api {
                status,
                code,
                message,
            } => Error::Server {
                status,
                code: code_text(&code),
                message,
            },
            other => Error::Internal(other.to_string()),
        }
    }
}

fn code_text(code: &slotbox_client::ErrorCode) -> String {
    use slotbox_client::ErrorCode;
    match code {
        ErrorCode::NoSlot => codes::NO_SLOT,
        ErrorCode::UnknownLease => codes::UNKNOWN_LEASE,
        ErrorCode::SlotLost => codes::SLOT_LOST,
        ErrorCode::InvalidJson => codes::INVALID_JSON,
        ErrorCode::InvalidRequest => codes::INVALID_REQUEST,
        ErrorCode::BodyTooLarge => codes::BODY_TOO_LARGE,
        ErrorCode::Unauthorized => codes::UNAUTHORIZED,
        ErrorCode::PathOutsideWorkspace => codes::PATH_OUTSIDE_WORKSPACE,
        ErrorCode::NotFound => codes::NOT_FOUND,
        ErrorCode::NotAFile => codes::NOT_A_FILE,
        ErrorCode::FileTooLarge => codes::FILE_TOO_LARGE,
        ErrorCode::Internal => codes::INTERNAL,
        ErrorCode::Other(other) => other,
    }
    .to_owned()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Error::NoSlot(_) | Error::ShuttingDown => {
                (StatusCode::SERVICE_UNAVAILABLE, codes::NO_SLOT.to_owned())
            }
            Error::UnknownLease(_) => (StatusCode::NOT_FOUND, codes::UNKNOWN_LEASE.to_owned()),
            Error::SlotLost(_) => (StatusCode::GONE, codes::SLOT_LOST.to_owned()),
            Error::Server { status, code, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                code.clone(),
            ),
            Error::InvalidJson(_) => (StatusCode::BAD_REQUEST, codes::INVALID_JSON.to_owned()),
            Error::InvalidRequest(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::INVALID_REQUEST.to_owned(),
            ),
            Error::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::BODY_TOO_LARGE.to_owned(),
            ),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, codes::NOT_FOUND.to_owned()),
            Error::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream".to_owned()),
            Error::Scheduler(_) | Error::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL.to_owned(),
            ),
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "internal error");
            "internal pool error; see the pool's log".to_owned()
        } else {
            self.to_string()
        };
        (
            status,
            Json(ErrorBody {
                error: ErrorDetail { code, message },
            }),
        )
            .into_response()
    }
}
