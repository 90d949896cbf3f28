//! Request bodies: JSON parsed with our error envelope for every way it can be wrong.
//!
//! axum's own `Json` answers some failures in plain text and insists on a content type; the seed's
//! clients send JSON without one. `JsonBody` accepts any content type and maps: not JSON → 400
//! `invalid_json`, wrong shape or types → 422 `invalid_request`, over the limit → 413
//! `body_too_large`. An empty body reads as `{}` where the type allows it.

use axum::body::Bytes;
use axum::extract::FromRequest;
use axum::extract::Request;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A JSON request body of type `T`.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text).map(JsonBody).map_err(|error| {
            use serde_json::error::Category;
            match error.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    Error::InvalidJson(error.to_string())
                }
                Category::Data => Error::InvalidRequest(error.to_string()),
            }
        })
    }
}

/// The raw body, with the size limit turned into our error.
pub(crate) async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, Error> {
    let limit = request
        .extensions()
        .get::<BodyLimit>()
        .map_or(usize::MAX, |limit| limit.0);
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::BodyTooLarge(limit)
            } else {
                Error::InvalidRequest(format!("unreadable request body: {rejection}"))
            }
        })
}

/// The body limit in force, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub(crate) usize);
