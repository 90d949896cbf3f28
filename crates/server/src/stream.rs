//! `POST /v1/leases/{id}/exec` with `Accept: text/event-stream`: the output as it arrives, then the
//! result.
//!
//! Events: `output` with `{"chunk": "..."}` (as many as needed, merged stdout and stderr, whole:
//! not truncated), then exactly one `result` with the same body a plain call returns, or one
//! `error` with the usual error body. If the client goes away before the result, the command is
//! interrupted, as a plain call's would be.

use std::sync::Arc;

use axum::response::sse::Event;
use axum::response::sse::KeepAlive;
use axum::response::sse::Sse;
use futures_util::Stream;
use futures_util::StreamExt;
use slotbox_exec::ExecRequest;

use crate::registry::Registry;

/// Chunks buffered between the command and a slow client; beyond this the command waits.
const STREAM_BUFFER_CHUNKS: usize = 64;

/// Interrupts the streamed command (and only it) when dropped before the result was sent.
struct DisconnectGuard {
    interrupt: slotbox_exec::Interrupt,
    lease_id: String,
    armed: bool,
}

impl DisconnectGuard {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::info!(lease_id = %self.lease_id, "stream client went away; interrupting");
            self.interrupt.trigger();
        }
    }
}

fn event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event("error").data("{}"))
}

pub(crate) fn exec_events(
    registry: Arc<Registry>,
    lease_id: String,
    mut request: ExecRequest,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let (chunks, received) = tokio::sync::mpsc::channel(STREAM_BUFFER_CHUNKS);
    request.stream = Some(chunks);
    let (done, finished) = tokio::sync::oneshot::channel();
    let interrupt = slotbox_exec::Interrupt::new();
    request.interrupt = Some(interrupt.clone());
    let mut guard = DisconnectGuard {
        interrupt,
        lease_id: lease_id.clone(),
        armed: true,
    };
    tokio::spawn(async move {
        let result = registry.exec(&lease_id, request).await;
        let _ = done.send(result);
    });
    let output = tokio_stream::wrappers::ReceiverStream::new(received)
        .map(|chunk| Ok(event("output", &serde_json::json!({ "chunk": chunk }))));
    let last = futures_util::stream::once(async move {
        let last = match finished.await {
            Ok(Ok(result)) => event("result", &result),
            Ok(Err(error)) => event("error", &error.to_wire().1),
            Err(_) => event(
                "error",
                &crate::error::Error::Internal(
                    "the command task ended without a result".to_owned(),
                )
                .to_wire()
                .1,
            ),
        };
        guard.disarm();
        Ok(last)
    });
    Sse::new(output.chain(last)).keep_alive(KeepAlive::default())
}
