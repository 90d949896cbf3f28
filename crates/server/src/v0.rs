//! The seed-compatible API: `/execute`, `/batch`, `/reset`, `/health`, `/slots`, `/artifacts/*`.
//!
//! Same routes, field names, envelopes and strings as the Python sandbox server
//! (`../shared/docs/seed-sandbox-server.md`), so its clients work unchanged; every documented
//! defect is fixed instead of copied, and each deviation is listed in `docs/compat.md`. Tool-level
//! outcomes are HTTP 200 with the 5-key envelope `{success, output, error, execution_id,
//! metadata}`; request-level problems are `{success: false, error}` with a 4xx status.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::Request;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use base64::Engine;
use serde_json::Map;
use serde_json::Value;
use serde_json::json;
use sha2::Digest;
use slotbox_exec::ExecRequest;
use slotbox_exec::OutputCap;
use slotbox_exec::Timeout;
use slotbox_protocol::ExecResult;

use crate::error::Error;
use crate::registry::Registry;
use crate::registry::RunMode;

/// The seed's default command timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The seed's per-stream output cap, in characters.
const MAX_OUTPUT_CHARS: usize = 50_000;
/// The seed's limit for `read_file` and `write_file`.
const MAX_FILE_BYTES: u64 = 100_000;
/// The seed's artifact limits.
const MAX_ARTIFACT_BYTES: u64 = 5_000_000;
const MAX_ARTIFACT_ENTRIES: usize = 5_000;

/// A request-level failure: `{"success": false, "error": message}` with a 4xx status.
#[derive(Debug)]
pub(crate) struct Rejection {
    status: StatusCode,
    message: String,
}

impl Rejection {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn body(&self) -> Value {
        json!({"success": false, "error": self.message})
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        let (status, message) = match &error {
            Error::PathOutsideWorkspace(_) => (
                StatusCode::FORBIDDEN,
                "Access denied: path outside workspace".to_owned(),
            ),
            Error::NotFound(path) => (StatusCode::NOT_FOUND, format!("Not found: {path}")),
            Error::NotAFile(path) => (StatusCode::BAD_REQUEST, format!("Not a file: {path}")),
            Error::FileTooLarge { size, max, .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Archive too large: over {} bytes (max {max})",
                    size.min(max)
                ),
            ),
            Error::InvalidRequest(message) => (StatusCode::BAD_REQUEST, message.clone()),
            Error::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request Entity Too Large".to_owned(),
            ),
            _ => {
                tracing::error!(%error, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error; see the server log".to_owned(),
                )
            }
        };
        Self { status, message }
    }
}

/// Reads a JSON body: 413 when too large, 400 `Invalid JSON` when not JSON.
async fn json_body(request: Request) -> Result<Value, Rejection> {
    let bytes = crate::body::read_body(request, &()).await?;
    serde_json::from_slice(&bytes).map_err(|_| Rejection::bad("Invalid JSON"))
}

fn object(value: &Value) -> Result<&Map<String, Value>, Rejection> {
    value
        .as_object()
        .ok_or_else(|| Rejection::bad("Expected a JSON object"))
}

/// Reads optional fields strictly: a wrong type is an error, never coerced (`"false"` is not
/// false).
struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn string(&self, name: &str, default: &'a str) -> Result<&'a str, Rejection> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::String(text)) => Ok(text),
            Some(_) => Err(Rejection::bad(format!("`{name}` must be a string"))),
        }
    }

    fn boolean(&self, name: &str, default: bool) -> Result<bool, Rejection> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(_) => Err(Rejection::bad(format!("`{name}` must be true or false"))),
        }
    }

    /// An integer clamped to `[min, max]`.
    fn clamped(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, Rejection> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(number)) => number
                .as_u64()
                .or_else(|| number.as_i64().map(|_| min))
                .map(|value| value.clamp(min, max))
                .ok_or_else(|| Rejection::bad(format!("`{name}` must be an integer"))),
            Some(_) => Err(Rejection::bad(format!("`{name}` must be an integer"))),
        }
    }
}

/// The 5-key envelope.
fn envelope(
    success: bool,
    output: String,
    error: String,
    execution_id: &Value,
    metadata: Value,
) -> Value {
    json!({
        "success": success,
        "output": output,
        "error": error,
        "execution_id": execution_id,
        "metadata": metadata,
    })
}

fn tool_error(error: impl Into<String>, execution_id: &Value, metadata: Value) -> Value {
    envelope(false, String::new(), error.into(), execution_id, metadata)
}

/// A workspace path as the seed's clients send it: relative, or under `/workspace` (the path the
/// sandboxed shell sees).
fn workspace_relative(path: &str) -> &str {
    match path.strip_prefix("/workspace") {
        Some("") => ".",
        Some(rest) if rest.starts_with('/') => rest.trim_start_matches('/'),
        _ => path,
    }
}

/// Runs one `/execute` request; `Err` for request-level problems (which start nothing).
async fn execute_one(registry: &Registry, request: &Value) -> Result<Value, Rejection> {
    let fields = Fields {
        map: object(request)?,
    };
    let slot_id = fields.string("slot_id", "")?;
    let tool = fields.string("tool", "")?;
    let execution_id = request.get("execution_id").cloned().unwrap_or(Value::Null);
    let empty = Map::new();
    let args = match request.get("args") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(args)) => args,
        Some(_) => return Err(Rejection::bad("`args` must be an object")),
    };
    let timeout = match request.get("timeout") {
        // `null` meant "no limit at all" in the seed; here it is the default.
        None | Some(Value::Null) => DEFAULT_TIMEOUT,
        Some(Value::Number(number)) => {
            let seconds = number.as_f64().unwrap_or(f64::NAN);
            let max = registry.config().limits.max_timeout;
            if !seconds.is_finite() || seconds <= 0.0 || seconds > max.as_secs_f64() {
                return Err(Rejection::bad(format!(
                    "`timeout` must be a number of seconds above 0 and at most {}",
                    max.as_secs_f64()
                )));
            }
            Duration::from_secs_f64(seconds)
        }
        Some(_) => return Err(Rejection::bad("`timeout` must be a number of seconds")),
    };
    let Some(index) = registry.slot_index(slot_id) else {
        return Ok(tool_error(
            format!("Unknown slot: {slot_id}"),
            &execution_id,
            json!({}),
        ));
    };
    let args = Fields { map: args };
    let sandboxed = registry.sandboxed();
    match tool {
        "bash" | "bash_stateful" => {
            let stateful = tool == "bash_stateful";
            let command = args.string("command", "")?;
            let network = args.boolean("allow_network", false)?;
            let require_sandbox = args.boolean("require_sandbox", false)?;
            let require_sandbox = if stateful {
                args.boolean("require_stateful_sandbox", require_sandbox)?
            } else {
                require_sandbox
            };
            if stateful && command.trim().is_empty() {
                return Ok(tool_error(
                    "Missing command",
                    &execution_id,
                    json!({"stateful": true}),
                ));
            }
            if require_sandbox && !sandboxed {
                return Ok(tool_error(
                    "Sandboxing required but bubblewrap is unavailable in this environment",
                    &execution_id,
                    json!({"sandboxed": false, "network_isolated": false, "requires_bwrap": true}),
                ));
            }
            let mut request = ExecRequest::new(command)
                .timeout(Some(Timeout::new(timeout)))
                .max_output(OutputCap::chars(MAX_OUTPUT_CHARS));
            let mode = if stateful {
                RunMode::Session { network }
            } else {
                request = request.separate_stderr();
                RunMode::OneShot { network }
            };
            let result = registry
                .run_in_slot(index, request, mode, execution_id.clone())
                .await
                .map_err(Rejection::from)?;
            let context = CommandContext {
                sandboxed,
                network,
                stateful,
                timeout: Timeout::new(timeout),
            };
            Ok(command_envelope(&result, &execution_id, &context))
        }
        "read_file" => {
            let path = args.string("path", "")?;
            let workspace = registry.slot_workspace(index);
            let relative = workspace_relative(path).to_owned();
            let read = tokio::task::spawn_blocking(move || {
                crate::files::read(
                    &crate::files::open_workspace(&workspace)?,
                    &relative,
                    MAX_FILE_BYTES,
                )
            })
            .await
            .map_err(|error| Rejection::from(Error::Internal(error.to_string())))?;
            Ok(match read {
                Ok(bytes) => envelope(
                    true,
                    String::from_utf8_lossy(&bytes).into_owned(),
                    String::new(),
                    &execution_id,
                    json!({"path": format!("/workspace/{}", workspace_relative(path)), "size": bytes.len()}),
                ),
                Err(error) => tool_error(file_error(path, &error), &execution_id, json!({})),
            })
        }
        "write_file" => {
            let path = args.string("path", "")?;
            let Some(Value::String(content)) = args.map.get("content") else {
                return Err(Rejection::bad("`content` must be a string"));
            };
            if content.len() as u64 > MAX_FILE_BYTES {
                return Ok(tool_error(
                    format!(
                        "Content too large: {} bytes (max {MAX_FILE_BYTES})",
                        content.len()
                    ),
                    &execution_id,
                    json!({}),
                ));
            }
            let workspace = registry.slot_workspace(index);
            let relative = workspace_relative(path).to_owned();
            let bytes = content.clone().into_bytes();
            let size = bytes.len();
            let written = tokio::task::spawn_blocking(move || {
                crate::files::write(
                    &crate::files::open_workspace(&workspace)?,
                    &relative,
                    &bytes,
                )
            })
            .await
            .map_err(|error| Rejection::from(Error::Internal(error.to_string())))?;
            Ok(match written {
                Ok(()) => envelope(
                    true,
                    format!("Successfully wrote {size} bytes to {path}"),
                    String::new(),
                    &execution_id,
                    json!({"path": format!("/workspace/{}", workspace_relative(path)), "size": size}),
                ),
                Err(error) => tool_error(file_error(path, &error), &execution_id, json!({})),
            })
        }
        "tmux" => Ok(tool_error(
            "The tmux tool is not supported by slotbox; use bash_stateful, whose cwd and environment persist in the slot",
            &execution_id,
            json!({"stateful": true, "unsupported": true}),
        )),
        other => Ok(tool_error(
            format!("Unknown tool: {other}"),
            &execution_id,
            json!({}),
        )),
    }
}

/// The seed's strings for file-tool failures.
fn file_error(path: &str, error: &Error) -> String {
    match error {
        Error::PathOutsideWorkspace(_) => "Access denied: path outside workspace".to_owned(),
        Error::NotFound(_) => format!("File not found: {path}"),
        Error::NotAFile(_) => format!("Not a file: {path}"),
        Error::FileTooLarge { size, max, .. } => {
            format!("File too large: {size} bytes (max {max})")
        }
        Error::InvalidRequest(message) => message.clone(),
        other => {
            tracing::error!(error = %other, "file tool failed");
            "Failed to access file".to_owned()
        }
    }
}

/// How a command was run, for its envelope.
#[derive(Clone, Copy)]
struct CommandContext {
    sandboxed: bool,
    network: bool,
    stateful: bool,
    timeout: Timeout,
}

/// The seed's command envelope, from a result.
fn command_envelope(result: &ExecResult, execution_id: &Value, context: &CommandContext) -> Value {
    let CommandContext {
        sandboxed,
        network,
        stateful,
        timeout,
    } = *context;
    let stdout = result.output.as_str();
    let stderr = result.stderr.as_deref().unwrap_or("");
    let output = match (stdout.is_empty(), stderr.is_empty()) {
        (_, true) => stdout.to_owned(),
        (true, false) => stderr.to_owned(),
        (false, false) => format!("{stdout}\n[stderr]\n{stderr}"),
    };
    let mut metadata = json!({
        "exit_code": if result.timed_out { -1 } else { result.exit_code },
        "sandboxed": sandboxed,
        "network_isolated": !network,
        "truncated": result.truncated,
        "duration_ms": result.duration_ms,
    });
    if stateful {
        metadata["stateful"] = json!(true);
        metadata["cwd"] = json!(result.cwd);
    }
    if result.timed_out {
        metadata["timeout"] = json!(true);
    }
    if result.interrupted {
        metadata["interrupted"] = json!(true);
    }
    if result.exit_code > 128 && !result.timed_out && !result.interrupted {
        metadata["signal"] = json!(result.exit_code - 128);
    }
    let (success, error) = if result.timed_out {
        (false, format!("Command timed out after {timeout}s"))
    } else if result.interrupted {
        (false, "Command interrupted".to_owned())
    } else if result.exit_code == 0 {
        (true, String::new())
    } else {
        (false, format!("Exit code: {}", result.exit_code))
    };
    envelope(success, output, error, execution_id, metadata)
}

pub(crate) async fn execute(
    State(registry): State<Arc<Registry>>,
    request: Request,
) -> Result<Json<Value>, Rejection> {
    let body = json_body(request).await?;
    Ok(Json(execute_one(&registry, &body).await?))
}

pub(crate) async fn batch(
    State(registry): State<Arc<Registry>>,
    request: Request,
) -> Result<Json<Value>, Rejection> {
    let body = json_body(request).await?;
    let Value::Array(items) = body else {
        return Err(Rejection::bad("Expected array of requests"));
    };
    // One task per slot runs that slot's items in array order; slots run concurrently.
    let mut by_slot: Vec<(String, Vec<(usize, Value)>)> = Vec::new();
    for (position, item) in items.into_iter().enumerate() {
        let slot = item
            .get("slot_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match by_slot.iter_mut().find(|(id, _)| *id == slot) {
            Some((_, group)) => group.push((position, item)),
            None => by_slot.push((slot, vec![(position, item)])),
        }
    }
    let total: usize = by_slot.iter().map(|(_, group)| group.len()).sum();
    let mut tasks = tokio::task::JoinSet::new();
    for (_, group) in by_slot {
        let registry = Arc::clone(&registry);
        tasks.spawn(async move {
            let mut results = Vec::with_capacity(group.len());
            for (position, item) in group {
                let result = match execute_one(&registry, &item).await {
                    Ok(envelope) => envelope,
                    Err(rejection) => rejection.body(),
                };
                results.push((position, result));
            }
            results
        });
    }
    let mut results = vec![Value::Null; total];
    while let Some(done) = tasks.join_next().await {
        let done = done.map_err(|error| Rejection::from(Error::Internal(error.to_string())))?;
        for (position, result) in done {
            results[position] = result;
        }
    }
    Ok(Json(Value::Array(results)))
}

pub(crate) async fn reset(
    State(registry): State<Arc<Registry>>,
    request: Request,
) -> Result<Json<Value>, Rejection> {
    let body = json_body(request).await?;
    let fields = Fields {
        map: object(&body)?,
    };
    let slot_id = fields.string("slot_id", "")?;
    let Some(index) = registry.slot_index(slot_id) else {
        return Ok(Json(tool_error(
            format!("Unknown slot: {slot_id}"),
            &Value::Null,
            json!({}),
        )));
    };
    Ok(Json(match registry.reset_slot(index).await {
        Ok(()) => envelope(
            true,
            format!("Reset workspace for {slot_id}"),
            String::new(),
            &Value::Null,
            json!({}),
        ),
        Err(_) => tool_error(
            "Failed to reset workspace: the slot is quarantined (see the server log)",
            &Value::Null,
            json!({"quarantined": true}),
        ),
    }))
}

pub(crate) async fn health(State(registry): State<Arc<Registry>>) -> Json<Value> {
    let statuses = registry.slot_statuses();
    let executing = statuses
        .iter()
        .filter(|status| status.busy.is_some())
        .count();
    Json(json!({
        "status": "ok",
        "slots": statuses.len(),
        "available": statuses.len() - executing,
        "executing": executing,
        "data_dir": registry.config().data_dir.display().to_string(),
        "bwrap_available": registry.sandboxed(),
        "stateful_dir": Value::Null,
        "isolation": registry.config().isolation.name(),
    }))
}

pub(crate) async fn slots(State(registry): State<Arc<Registry>>) -> Json<Value> {
    let slots: Vec<Value> = registry
        .slot_statuses()
        .into_iter()
        .map(|status| {
            json!({
                "slot_id": status.id,
                "state": if status.busy.is_some() { "executing" } else { "available" },
                "workspace_dir": status.workspace.display().to_string(),
                "current_execution_id": status.busy.unwrap_or(Value::Null),
            })
        })
        .collect();
    Json(json!({ "slots": slots }))
}

/// The slot an artifacts request names, or the seed's 404.
fn artifact_slot(
    registry: &Registry,
    fields: &Fields<'_>,
) -> Result<std::path::PathBuf, Rejection> {
    let slot_id = fields.string("slot_id", "")?;
    registry
        .slot_index(slot_id)
        .map(|index| registry.slot_workspace(index))
        .ok_or_else(|| Rejection {
            status: StatusCode::NOT_FOUND,
            message: format!("Unknown slot: {slot_id}"),
        })
}

/// What every artifacts request starts with: its fields, the slot's workspace (or the seed's
/// 404) and the requested path, made workspace-relative.
fn artifact_request<'a>(
    registry: &Registry,
    body: &'a Value,
    default_path: &'static str,
) -> Result<(Fields<'a>, std::path::PathBuf, String), Rejection> {
    let fields = Fields { map: object(body)? };
    let workspace = artifact_slot(registry, &fields)?;
    let path = workspace_relative(fields.string("path", default_path)?).to_owned();
    Ok((fields, workspace, path))
}

/// `max_entries`, clamped to the seed's range.
fn max_entries(fields: &Fields<'_>) -> Result<usize, Rejection> {
    let limit = MAX_ARTIFACT_ENTRIES as u64;
    Ok(fields.clamped("max_entries", limit, 1, limit)? as usize)
}

fn mime_of(path: &str) -> &'static str {
    let lower = path.to_ascii_lowercase();
    let table: &[(&str, &str)] = &[
        (".tar.gz", "application/gzip"),
        (".tgz", "application/gzip"),
        (".png", "image/png"),
        (".jpg", "image/jpeg"),
        (".jpeg", "image/jpeg"),
        (".webp", "image/webp"),
        (".gif", "image/gif"),
        (".txt", "text/plain"),
        (".log", "text/plain"),
        (".json", "application/json"),
        (".xml", "application/xml"),
        (".html", "text/html"),
        (".md", "text/markdown"),
    ];
    table
        .iter()
        .find(|(suffix, _)| lower.ends_with(suffix))
        .map_or("application/octet-stream", |(_, mime)| mime)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, Rejection> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Rejection::from(Error::Internal(error.to_string())))?
        .map_err(Rejection::from)
}

pub(crate) async fn artifacts_read(
    State(registry): State<Arc<Registry>>,
    request: Request,
) -> Result<Json<Value>, Rejection> {
    let body = json_body(request).await?;
    let (fields, workspace, path) = artifact_request(&registry, &body, "")?;
    let encoding = fields
        .string("encoding", "text")?
        .trim()
        .to_ascii_lowercase();
    if encoding != "text" && encoding != "base64" {
        return Err(Rejection::bad(format!("Unsupported encoding: {encoding}")));
    }
    let limit = fields.clamped("max_bytes", MAX_ARTIFACT_BYTES, 1, MAX_ARTIFACT_BYTES)?;
    let include_sha256 = fields.boolean("include_sha256", false)?;
    let read_path = path.clone();
    let (content, file_size) = blocking(move || {
        crate::files::read_head(
            &crate::files::open_workspace(&workspace)?,
            &read_path,
            limit,
        )
    })
    .await?;
    let sha256 = include_sha256.then(|| {
        sha2::Sha256::digest(&content)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    });
    let text = if encoding == "base64" {
        base64::engine::general_purpose::STANDARD.encode(&content)
    } else {
        String::from_utf8_lossy(&content).into_owned()
    };
    Ok(Json(json!({
        "success": true,
        "content": text,
        "encoding": encoding,
        "truncated": file_size > limit,
        "bytes": content.len(),
        "file_size": file_size,
        "path": path,
        "mime": mime_of(&path),
        "sha256": sha256,
    })))
}

pub(crate) async fn artifacts_list(
    State(registry): State<Arc<Registry>>,
    request: Request,
) -> Result<Json<Value>, Rejection> {
    let body = json_body(request).await?;
    let (fields, workspace, path) = artifact_request(&registry, &body, ".")?;
    let recursive = fields.boolean("recursive", false)?;
    let max_entries = max_entries(&fields)?;
    let (entries, truncated) = blocking(move || {
        crate::files::list(
            &crate::files::open_workspace(&workspace)?,
            &path,
            recursive,
            max_entries,
        )
    })
    .await?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|entry| json!({"path": entry.path, "is_dir": entry.is_dir, "size": entry.size, "mtime": entry.mtime}))
        .collect();
    Ok(Json(
        json!({"success": true, "entries": entries, "truncated": truncated}),
    ))
}

pub(crate) async fn artifacts_archive(
    State(registry): State<Arc<Registry>>,
    request: Request,
) -> Result<Json<Value>, Rejection> {
    let body = json_body(request).await?;
    let (fields, workspace, path) = artifact_request(&registry, &body, ".")?;
    let format = fields.string("format", "tar.gz")?.to_owned();
    if format != "tar.gz" && format != "tgz" {
        return Err(Rejection::bad(format!(
            "Unsupported archive format: {format}"
        )));
    }
    let max_bytes = fields.clamped("max_bytes", MAX_ARTIFACT_BYTES, 1, MAX_ARTIFACT_BYTES)?;
    let max_entries = max_entries(&fields)?;
    let (archive, count) = blocking(move || {
        crate::files::archive(
            &crate::files::open_workspace(&workspace)?,
            &path,
            max_bytes,
            max_entries,
        )
    })
    .await?;
    Ok(Json(json!({
        "success": true,
        "content": base64::engine::general_purpose::STANDARD.encode(&archive),
        "encoding": "base64",
        "format": format,
        "bytes": archive.len(),
        "entry_count": count,
    })))
}
