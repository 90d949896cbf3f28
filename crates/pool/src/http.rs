//! The pool's HTTP surface: the v1 lease API of `slotbox serve`, forwarded to the server that
//! holds each lease.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::Request;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::routing::post;
use serde_json::Value;
use serde_json::json;
use slotbox_protocol::ExecResult;
use slotbox_protocol::v1::CreateLease;
use slotbox_protocol::v1::ExecBody;
use slotbox_protocol::v1::Interrupted;
use slotbox_protocol::v1::Lease;
use slotbox_protocol::v1::Released;
use slotbox_protocol::v1::RenewLease;

use crate::Error;
use crate::Result;
use crate::pool::Pool;

/// Longest wait for a slot a client may ask for.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Wait for a slot when the request names none (as `slotbox serve`).
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct AppState {
    pool: Arc<Pool>,
    token: Option<Arc<str>>,
}

/// The pool's router; `token` (if any) is required on every route but `/v1/health`.
pub fn router(pool: Arc<Pool>, token: Option<String>) -> Router {
    let state = AppState {
        pool,
        token: token.map(Arc::from),
    };
    let authed = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/leases", post(create_lease))
        .route("/v1/leases/{lease_id}", axum::routing::delete(release))
        .route("/v1/leases/{lease_id}/renew", post(renew))
        .route("/v1/leases/{lease_id}/exec", post(exec))
        .route("/v1/leases/{lease_id}/interrupt", post(interrupt))
        .route(
            "/v1/leases/{lease_id}/files",
            get(read_file).put(write_file),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/v1/health", get(health))
        .merge(authed)
        .fallback(|| async { Error::NotFound("no such route".to_owned()) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = state.token.as_deref() else {
        return next.run(request).await;
    };
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if slotbox_protocol::v1::bearer_matches(authorization, token) {
        next.run(request).await
    } else {
        Error::Server {
            status: 401,
            code: slotbox_protocol::v1::codes::UNAUTHORIZED.to_owned(),
            message: "missing or invalid bearer token".to_owned(),
        }
        .into_response()
    }
}

/// Largest request body (JSON or file upload), as `slotbox serve`'s default.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The body, or our JSON error (413 over the limit) instead of axum's plain-text one.
fn body_bytes(
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::BodyTooLarge(MAX_BODY_BYTES)
        } else {
            Error::InvalidRequest(rejection.body_text())
        }
    })
}

/// JSON of type `T` (an empty body reads as its default): not JSON → 400 `invalid_json`, wrong
/// shape or types → 422 `invalid_request`.
fn parse<T: serde::de::DeserializeOwned + Default>(bytes: &Bytes) -> Result<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_required(bytes)
}

fn parse_required<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => Error::InvalidRequest(error.to_string()),
        _ => Error::InvalidJson(error.to_string()),
    })
}

async fn create_lease(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Lease>)> {
    let body = body_bytes(body)?;
    let request: CreateLease = parse(&body)?;
    let wait = match request.wait_s {
        None => DEFAULT_WAIT,
        Some(seconds)
            if seconds.is_finite() && seconds >= 0.0 && seconds <= MAX_WAIT.as_secs_f64() =>
        {
            Duration::from_secs_f64(seconds)
        }
        Some(seconds) => {
            return Err(Error::InvalidRequest(format!(
                "`wait_s` must be between 0 and {}, got {seconds}",
                MAX_WAIT.as_secs()
            )));
        }
    };
    let lease = state.pool.acquire(&request, wait).await?;
    Ok((StatusCode::CREATED, Json(lease)))
}

async fn renew(
    State(state): State<AppState>,
    Path(lease_id): Path<String>,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Lease>> {
    let body = body_bytes(body)?;
    let request: RenewLease = parse(&body)?;
    let placement = state.pool.placement(&lease_id)?;
    let ttl = match request.ttl_s {
        None => None,
        Some(seconds) => Some(
            Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|ttl| !ttl.is_zero())
                .ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "`ttl_s` must be a positive number of seconds, got {seconds}"
                    ))
                })?,
        ),
    };
    match placement.client.renew(&placement.server_lease, ttl).await {
        Ok(lease) => {
            if !state.pool.renewed(&lease_id, &lease.expires_at) {
                // The pool expired it meanwhile and counts its slot as free: release it on the
                // server too, so both agree, and tell the client it is gone.
                let _ = placement.client.release(&placement.server_lease).await;
                return Err(Error::UnknownLease(lease_id));
            }
            Ok(Json(Lease {
                lease_id,
                slot_id: format!("{}/{}", placement.server, lease.slot_id),
                expires_at: lease.expires_at,
            }))
        }
        Err(error) => Err(state.pool.after_error(&lease_id, &placement, error).await),
    }
}

async fn exec(
    State(state): State<AppState>,
    Path(lease_id): Path<String>,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response> {
    let body = body_bytes(body)?;
    let request: ExecBody = parse_required(&body)?;
    let placement = state.pool.placement(&lease_id)?;
    let wants_stream = slotbox_protocol::v1::wants_event_stream(
        headers
            .get_all(axum::http::header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok()),
    );
    if wants_stream {
        // The server's event stream, passed through as it comes; if the client goes away the
        // connection to the server closes too, and the server interrupts the command.
        return match placement
            .client
            .exec_event_stream(&placement.server_lease, &request)
            .await
        {
            Ok(stream) => Ok((
                [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                axum::body::Body::from_stream(stream),
            )
                .into_response()),
            Err(error) => Err(state.pool.after_error(&lease_id, &placement, error).await),
        };
    }
    match placement
        .client
        .exec(&placement.server_lease, &request)
        .await
    {
        Ok(result) => Ok(Json::<ExecResult>(result).into_response()),
        Err(error) => Err(state.pool.after_error(&lease_id, &placement, error).await),
    }
}

async fn interrupt(
    State(state): State<AppState>,
    Path(lease_id): Path<String>,
) -> Result<Json<Interrupted>> {
    let placement = state.pool.placement(&lease_id)?;
    match placement.client.interrupt(&placement.server_lease).await {
        Ok(interrupted) => Ok(Json(Interrupted { interrupted })),
        Err(error) => Err(state.pool.after_error(&lease_id, &placement, error).await),
    }
}

async fn release(
    State(state): State<AppState>,
    Path(lease_id): Path<String>,
) -> Result<Json<Released>> {
    let placement = state.pool.placement(&lease_id)?;
    match placement.client.release(&placement.server_lease).await {
        Ok(released) => {
            state.pool.forget(&lease_id);
            Ok(Json(Released {
                lease_id,
                slot_id: format!("{}/{}", placement.server, released.slot_id),
            }))
        }
        Err(error) => Err(state.pool.after_error(&lease_id, &placement, error).await),
    }
}

#[derive(Debug, serde::Deserialize)]
struct FileQuery {
    path: String,
}

async fn read_file(
    State(state): State<AppState>,
    Path(lease_id): Path<String>,
    query: std::result::Result<Query<FileQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|rejection| Error::InvalidRequest(rejection.body_text()))?;
    let placement = state.pool.placement(&lease_id)?;
    match placement
        .client
        .read_file(&placement.server_lease, &query.path)
        .await
    {
        Ok(bytes) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response()),
        Err(error) => Err(state.pool.after_error(&lease_id, &placement, error).await),
    }
}

async fn write_file(
    State(state): State<AppState>,
    Path(lease_id): Path<String>,
    query: std::result::Result<Query<FileQuery>, axum::extract::rejection::QueryRejection>,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<StatusCode> {
    let body = body_bytes(body)?;
    let Query(query) = query.map_err(|rejection| Error::InvalidRequest(rejection.body_text()))?;
    let placement = state.pool.placement(&lease_id)?;
    match placement
        .client
        .write_file(&placement.server_lease, &query.path, body.to_vec())
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(error) => Err(state.pool.after_error(&lease_id, &placement, error).await),
    }
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    let (servers, slots, free) = state.pool.capacity();
    Json(json!({
        "status": "ok",
        "scheduler": state.pool.scheduler_name(),
        "servers": servers,
        "slots": slots,
        "free": free,
        "leased": slots - free,
    }))
}

/// Prometheus metrics of the pool (behind the token, like every route but health).
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.pool.metrics_text(),
    )
        .into_response()
}
