//! slotbox's sandbox server: one process, many isolated slots, reached over HTTP.
//!
//! `router(state)` builds the whole HTTP surface (tests call it without a socket); `serve` binds
//! it and shuts down gracefully. Handlers translate requests into calls on the `Registry`, which
//! owns every slot and lease; `error::Error` is the one place errors become responses.
//!
//! Architecture invariant: commands run only through `slotbox-exec`; this crate never spawns a
//! process itself.

mod body;
pub mod config;
mod error;
mod files;
mod metrics;
mod registry;
mod stream;
mod v0;
mod v1;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::extract::State;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::routing::post;

pub use config::Isolation;
pub use config::Limits;
pub use config::ServerConfig;
pub use error::Error;
pub use error::Result;

use crate::body::BodyLimit;
use crate::registry::Registry;

/// A running server's shared state.
#[derive(Debug, Clone)]
pub struct AppState {
    registry: Arc<Registry>,
}

impl AppState {
    /// Prepares the slots (empty workspaces) and starts the lease reaper. Needs a tokio runtime.
    pub fn new(config: ServerConfig) -> Result<Self> {
        let registry = Registry::new(Arc::new(config))?;
        tokio::spawn(Arc::clone(&registry).reap());
        Ok(Self { registry })
    }

    /// Kills every running command (part of shutdown).
    pub fn interrupt_all(&self) {
        self.registry.interrupt_all();
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let registry = Arc::clone(&state.registry);
    let limit = registry.config().limits.max_body_bytes;
    let authed = Router::new()
        .route("/execute", post(v0::execute))
        .route("/batch", post(v0::batch))
        .route("/reset", post(v0::reset))
        .route("/health", get(v0::health))
        .route("/slots", get(v0::slots))
        .route("/artifacts/read", post(v0::artifacts_read))
        .route("/artifacts/list", post(v0::artifacts_list))
        .route("/artifacts/archive", post(v0::artifacts_archive))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(v1::openapi))
        .route("/v1/leases", post(v1::create_lease))
        .route("/v1/leases/{lease_id}", axum::routing::delete(v1::release))
        .route("/v1/leases/{lease_id}/renew", post(v1::renew_lease))
        .route("/v1/leases/{lease_id}/exec", post(v1::exec))
        .route("/v1/leases/{lease_id}/interrupt", post(v1::interrupt))
        .route(
            "/v1/leases/{lease_id}/files",
            get(v1::read_file).put(v1::write_file),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&registry),
            require_token,
        ));
    Router::new()
        .route("/v1/health", get(v1::health))
        .merge(authed)
        .fallback(|| async { Error::NotFound("no such route".to_owned()) })
        .layer(axum::middleware::from_fn(
            move |mut request: Request, next: Next| async move {
                request.extensions_mut().insert(BodyLimit(limit));
                next.run(request).await
            },
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(registry)
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    let executing = registry
        .slot_statuses()
        .iter()
        .filter(|status| status.busy.is_some())
        .count();
    let text = registry.metrics.render(&registry.occupancy(), executing);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Rejects requests without the configured bearer token.
async fn require_token(
    State(registry): State<Arc<Registry>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = registry.config().token.as_deref() else {
        return next.run(request).await;
    };
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if slotbox_protocol::v1::bearer_matches(authorization, token) {
        next.run(request).await
    } else {
        Error::Unauthorized.into_response()
    }
}

/// Serves `router(state)` on `listener` until `shutdown` resolves, then stops accepting, kills
/// running commands and waits for in-flight requests to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let stopping = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: interrupting running commands");
            stopping.interrupt_all();
        })
        .await
}
