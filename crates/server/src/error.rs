//! Errors: the crate's error type, and the one place where errors become HTTP responses.
//!
//! Client mistakes carry a clear message; internal failures are logged in full and answered with a
//! generic message, so no path, errno or stack detail reaches a client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use slotbox_protocol::v1::ErrorBody;
use slotbox_protocol::v1::ErrorDetail;
use slotbox_protocol::v1::codes;

/// Why a server operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lease is unknown, expired or released.
    #[error("unknown lease {0}")]
    UnknownLease(String),
    /// No slot became free in time.
    #[error("no slot became free within {0:?}")]
    NoSlot(std::time::Duration),
    /// The request body is not JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The request is well-formed JSON with wrong fields or values.
    #[error("{0}")]
    InvalidRequest(String),
    /// The request body is too large.
    #[error("request body over the {0}-byte limit")]
    BodyTooLarge(usize),
    /// Missing or wrong token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A path outside the workspace.
    #[error("path outside the workspace: {0}")]
    PathOutsideWorkspace(String),
    /// A file that does not exist, or a route that does not.
    #[error("not found: {0}")]
    NotFound(String),
    /// A file over the size limit of the operation.
    #[error("{path} is {size} bytes, over the {max}-byte limit")]
    FileTooLarge {
        /// The path as given.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Not a regular file.
    #[error("not a regular file: {0}")]
    NotAFile(String),
    /// The data directory or a workspace could not be prepared.
    #[error("preparing {path}: {source}")]
    Setup {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The execution core failed to run a command (sandbox broken, IO).
    #[error(transparent)]
    Exec(#[from] slotbox_exec::Error),
    /// Anything else that is the server's fault.
    #[error("{0}")]
    Internal(String),
}

/// Results of server operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The status and body this error answers with (internal details are logged, not sent).
    pub(crate) fn to_wire(&self) -> (StatusCode, ErrorBody) {
        let (status, code) = match self {
            Error::UnknownLease(_) => (StatusCode::NOT_FOUND, codes::UNKNOWN_LEASE),
            Error::NoSlot(_) => (StatusCode::SERVICE_UNAVAILABLE, codes::NO_SLOT),
            Error::InvalidJson(_) => (StatusCode::BAD_REQUEST, codes::INVALID_JSON),
            Error::InvalidRequest(_) => (StatusCode::UNPROCESSABLE_ENTITY, codes::INVALID_REQUEST),
            Error::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, codes::BODY_TOO_LARGE),
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED),
            Error::PathOutsideWorkspace(_) => {
                (StatusCode::FORBIDDEN, codes::PATH_OUTSIDE_WORKSPACE)
            }
            Error::NotFound(_) => (StatusCode::NOT_FOUND, codes::NOT_FOUND),
            Error::NotAFile(_) => (StatusCode::BAD_REQUEST, codes::NOT_A_FILE),
            Error::FileTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, codes::FILE_TOO_LARGE),
            Error::Setup { .. } | Error::Exec(_) | Error::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL)
            }
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "internal error");
            "internal server error; see the server log".to_owned()
        } else {
            self.to_string()
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
            },
        };
        (status, body)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, body) = self.to_wire();
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
