//! The v1 lease API: handlers turning HTTP into registry calls, and validation of every number at
//! the wire edge (below this module, times are `Duration`s and `Timeout`s).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::Request;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use serde::Deserialize;
use slotbox_exec::ExecRequest;
use slotbox_exec::OutputCap;
use slotbox_exec::Timeout;
use slotbox_protocol::ExecResult;
use slotbox_protocol::v1::CreateLease;
use slotbox_protocol::v1::ErrorBody;
use slotbox_protocol::v1::ExecBody;
use slotbox_protocol::v1::Health;
use slotbox_protocol::v1::HealthLimits;
use slotbox_protocol::v1::Interrupted;
use slotbox_protocol::v1::Lease;
use slotbox_protocol::v1::Released;
use slotbox_protocol::v1::RenewLease;

use crate::body::JsonBody;
use crate::error::Error;
use crate::error::Result;
use crate::registry::Granted;
use crate::registry::Registry;

/// Seconds from the wire: finite, positive, at most `max`. `what` names the field in errors.
pub(crate) fn seconds(
    value: Option<f64>,
    default: Duration,
    max: Duration,
    what: &str,
) -> Result<Duration> {
    let Some(seconds) = value else {
        return Ok(default);
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(Error::InvalidRequest(format!(
            "`{what}` must be a positive number of seconds, got {seconds}"
        )));
    }
    if seconds > max.as_secs_f64() {
        return Err(Error::InvalidRequest(format!(
            "`{what}` is {seconds}, over the maximum of {}",
            max.as_secs_f64()
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn lease_of(granted: Granted) -> Lease {
    Lease {
        lease_id: granted.lease_id,
        slot_id: granted.slot_id,
        expires_at: granted
            .expires_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    }
}

/// Lease a slot: waits first come, first served up to `wait_s` for one to be free.
#[utoipa::path(post, path = "/v1/leases", tag = "v1", request_body = CreateLease,
    responses((status = 201, body = Lease), (status = 503, description = "no_slot", body = ErrorBody),
        (status = 422, description = "invalid_request", body = ErrorBody)))]
pub(crate) async fn create_lease(
    State(registry): State<Arc<Registry>>,
    JsonBody(body): JsonBody<CreateLease>,
) -> Result<(StatusCode, Json<Lease>)> {
    let limits = &registry.config().limits;
    let ttl = seconds(body.ttl_s, limits.default_ttl, limits.max_ttl, "ttl_s")?;
    let wait = match body.wait_s {
        // Zero means "do not wait", which is meaningful here.
        Some(0.0) => Duration::ZERO,
        other => seconds(other, limits.default_wait, limits.max_wait, "wait_s")?,
    };
    let granted = registry
        .acquire(ttl, wait, body.network.unwrap_or(false))
        .await?;
    registry.start_early(&granted.lease_id);
    Ok((StatusCode::CREATED, Json(lease_of(granted))))
}

/// Extend a lease by `ttl_s` from now.
#[utoipa::path(post, path = "/v1/leases/{lease_id}/renew", tag = "v1", request_body = RenewLease,
    params(("lease_id" = String, Path)),
    responses((status = 200, body = Lease), (status = 404, description = "unknown_lease", body = ErrorBody)))]
pub(crate) async fn renew_lease(
    State(registry): State<Arc<Registry>>,
    Path(lease_id): Path<String>,
    JsonBody(body): JsonBody<RenewLease>,
) -> Result<Json<Lease>> {
    let limits = &registry.config().limits;
    let ttl = match body.ttl_s {
        None => None,
        some => Some(seconds(some, limits.default_ttl, limits.max_ttl, "ttl_s")?),
    };
    Ok(Json(lease_of(registry.renew(&lease_id, ttl)?)))
}

/// Run a command in the lease's session. With `Accept: text/event-stream` the output streams as
/// `output` events (`{"chunk": ...}`), then one `result` event with this same body.
#[utoipa::path(post, path = "/v1/leases/{lease_id}/exec", tag = "v1", request_body = ExecBody,
    params(("lease_id" = String, Path)),
    responses((status = 200, body = ExecResult), (status = 404, description = "unknown_lease", body = ErrorBody),
        (status = 422, description = "invalid_request", body = ErrorBody)))]
pub(crate) async fn exec(
    State(registry): State<Arc<Registry>>,
    Path(lease_id): Path<String>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<ExecBody>,
) -> Result<Response> {
    let limits = &registry.config().limits;
    let timeout = seconds(
        body.timeout_s,
        limits.default_timeout,
        limits.max_timeout,
        "timeout_s",
    )?;
    let max_output = body
        .max_output_chars
        .unwrap_or(slotbox_protocol::DEFAULT_MAX_OUTPUT_CHARS as u64);
    if max_output > limits.max_output_chars {
        return Err(Error::InvalidRequest(format!(
            "`max_output_chars` is {max_output}, over the maximum of {}",
            limits.max_output_chars
        )));
    }
    let mut request = ExecRequest::new(body.command)
        .timeout(Some(Timeout::new(timeout)))
        .max_output(OutputCap::chars(
            usize::try_from(max_output).unwrap_or(usize::MAX),
        ));
    request.stdin = body.stdin.map(String::into_bytes);
    let wants_stream = slotbox_protocol::v1::wants_event_stream(
        headers
            .get_all(axum::http::header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok()),
    );
    if wants_stream {
        // An unknown lease is a plain 404, not a stream that ends in an error.
        registry.check_lease(&lease_id)?;
        return Ok(crate::stream::exec_events(registry, lease_id, request).into_response());
    }
    Ok(Json(registry.exec(&lease_id, request).await?).into_response())
}

/// Interrupt the lease's running command (it returns exit code 130).
#[utoipa::path(post, path = "/v1/leases/{lease_id}/interrupt", tag = "v1",
    params(("lease_id" = String, Path)),
    responses((status = 200, body = Interrupted), (status = 404, description = "unknown_lease", body = ErrorBody)))]
pub(crate) async fn interrupt(
    State(registry): State<Arc<Registry>>,
    Path(lease_id): Path<String>,
) -> Result<Json<Interrupted>> {
    Ok(Json(Interrupted {
        interrupted: registry.interrupt(&lease_id)?,
    }))
}

/// Release a lease: its slot is reset (workspace emptied, processes killed) and freed.
#[utoipa::path(delete, path = "/v1/leases/{lease_id}", tag = "v1",
    params(("lease_id" = String, Path)),
    responses((status = 200, body = Released), (status = 404, description = "unknown_lease", body = ErrorBody)))]
pub(crate) async fn release(
    State(registry): State<Arc<Registry>>,
    Path(lease_id): Path<String>,
) -> Result<Json<Released>> {
    let slot_id = registry.release(&lease_id).await?;
    Ok(Json(Released { lease_id, slot_id }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct FileQuery {
    path: Option<String>,
}

fn query_path(
    query: std::result::Result<Query<FileQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<String> {
    let Query(query) = query.map_err(|rejection| Error::InvalidRequest(rejection.body_text()))?;
    query
        .path
        .ok_or_else(|| Error::InvalidRequest("missing query parameter `path`".to_owned()))
}

/// Read a workspace file's raw bytes.
#[utoipa::path(get, path = "/v1/leases/{lease_id}/files", tag = "v1",
    params(("lease_id" = String, Path), ("path" = String, Query, description = "relative to the workspace")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, description = "path_outside_workspace", body = ErrorBody),
        (status = 404, description = "not_found or unknown_lease", body = ErrorBody)))]
pub(crate) async fn read_file(
    State(registry): State<Arc<Registry>>,
    Path(lease_id): Path<String>,
    query: std::result::Result<Query<FileQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let path = query_path(query)?;
    let workspace = registry.workspace_dir(&lease_id)?;
    let max = registry.config().limits.max_file_bytes;
    let content = tokio::task::spawn_blocking(move || crate::files::read(&workspace, &path, max))
        .await
        .map_err(|error| Error::Internal(error.to_string()))??;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        content,
    )
        .into_response())
}

/// Write raw bytes to a workspace file (parents created, atomic replace).
#[utoipa::path(put, path = "/v1/leases/{lease_id}/files", tag = "v1",
    params(("lease_id" = String, Path), ("path" = String, Query, description = "relative to the workspace")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204), (status = 403, description = "path_outside_workspace", body = ErrorBody),
        (status = 413, description = "body_too_large", body = ErrorBody)))]
pub(crate) async fn write_file(
    State(registry): State<Arc<Registry>>,
    Path(lease_id): Path<String>,
    query: std::result::Result<Query<FileQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<StatusCode> {
    let path = query_path(query)?;
    registry.workspace_dir(&lease_id)?;
    let content = crate::body::read_body(request, &()).await?;
    // Opened only now that the (possibly slow) upload is complete, under the lease check: if
    // the lease ended meanwhile this fails, and if it ends after, the write lands in the
    // released workspace (renamed away), never in the slot's next tenant's.
    let workspace = registry.workspace_dir(&lease_id)?;
    tokio::task::spawn_blocking(move || crate::files::write(&workspace, &path, &content))
        .await
        .map_err(|error| Error::Internal(error.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}

/// Slots, isolation and limits in force. Needs no token.
#[utoipa::path(get, path = "/v1/health", tag = "v1", responses((status = 200, body = Health)))]
pub(crate) async fn health(State(registry): State<Arc<Registry>>) -> Json<Health> {
    let config = registry.config();
    let occupancy = registry.occupancy();
    let sandbox_limits = match &config.isolation {
        crate::config::Isolation::Bubblewrap(bwrap) => bwrap.limits.as_ref().map(|limits| {
            (
                limits.layout.name().to_owned(),
                limits.limits.memory_bytes,
                limits.limits.pids,
                limits.limits.cpu_millis,
            )
        }),
        // The container's own cgroup, set by the engine.
        crate::config::Isolation::Docker(docker) => Some((
            "docker".to_owned(),
            docker
                .memory_bytes
                .and_then(|bytes| u64::try_from(bytes).ok()),
            docker.pids.and_then(|pids| u64::try_from(pids).ok()),
            docker
                .nano_cpus
                .and_then(|nanos| u64::try_from(nanos / 1_000_000).ok()),
        )),
        crate::config::Isolation::None => None,
    };
    let (cgroups, memory_bytes, pids, cpu_millis) = match sandbox_limits {
        Some((cgroups, memory, pids, cpu)) => (Some(cgroups), memory, pids, cpu),
        None => (None, None, None, None),
    };
    Json(Health {
        status: "ok".to_owned(),
        slots: config.slots,
        free: occupancy.free,
        leased: occupancy.leased,
        quarantined: occupancy.quarantined,
        isolation: config.isolation.name().to_owned(),
        limits: HealthLimits {
            network_default: false,
            max_timeout_s: config.limits.max_timeout.as_secs_f64(),
            max_output_chars: config.limits.max_output_chars,
            max_body_bytes: config.limits.max_body_bytes,
            cgroups,
            memory_bytes,
            pids,
            cpu_millis,
        },
    })
}

/// The v1 API's OpenAPI description, generated from the handlers and wire types.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "slotbox sandbox server",
        description = "The v1 lease API. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        create_lease,
        renew_lease,
        exec,
        interrupt,
        release,
        read_file,
        write_file,
        health
    ),
    components(schemas(
        ErrorBody,
        slotbox_protocol::v1::ErrorDetail,
        slotbox_protocol::v1::HealthLimits
    ))
)]
pub(crate) struct ApiDoc;

pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    use utoipa::OpenApi;
    Json(ApiDoc::openapi())
}
