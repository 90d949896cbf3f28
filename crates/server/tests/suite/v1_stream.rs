//! Streaming exec (`Accept: text/event-stream`): chunks as they come, then one result event.

use axum::body::Body;
use axum::http::Request;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use pretty_assertions::assert_eq;
use serde_json::Value;
use serde_json::json;

use super::eventually;
use super::process_alive;
use super::server;

fn stream_request(lease: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(format!("/v1/leases/{lease}/exec"))
        .header("accept", "text/event-stream")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Parses SSE text into (event, data) pairs.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(value).ok();
                }
            }
            Some((name?, data?))
        })
        .collect()
}

#[tokio::test]
async fn chunks_then_one_result() {
    let Some(s) = server(1).await else { return };
    let (lease, _) = s.lease().await;
    let request = stream_request(
        &lease,
        json!({"command": "for i in 1 2 3; do echo step$i; sleep 0.05; done; echo err >&2; exit 4"}),
    );
    let reply = s.raw(request).await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8(reply.bytes).unwrap();
    let events = events(&text);
    let (last_name, result) = events.last().unwrap();
    assert_eq!(last_name, "result");
    assert_eq!(result["exit_code"], 4);
    assert_eq!(result["output"], "step1\nstep2\nstep3\nerr\n");
    let streamed: String = events
        .iter()
        .filter(|(name, _)| name == "output")
        .map(|(_, data)| data["chunk"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, "step1\nstep2\nstep3\nerr\n");
    assert!(events.iter().filter(|(name, _)| name == "output").count() >= 3);
    assert_eq!(
        events.iter().filter(|(name, _)| name == "result").count(),
        1
    );
}

#[tokio::test]
async fn unknown_lease_is_a_plain_404() {
    let Some(s) = server(1).await else { return };
    let reply = s
        .raw(stream_request("nope", json!({"command": "true"})))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json["error"]["code"], "unknown_lease");
}

#[tokio::test]
async fn a_client_that_goes_away_interrupts_the_command() {
    let Some(s) = server(1).await else { return };
    let (lease, _) = s.lease().await;
    let tag = format!("slotbox_stream_gone_{}", std::process::id());
    let request = stream_request(
        &lease,
        json!({"command": format!("echo begun; exec -a {tag} sleep 60")}),
    );
    let response = s.router().oneshot_request(request).await;
    let mut body = response.into_body();
    // Read until the first chunk arrives, then hang up.
    let first = body.frame().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(first.data_ref().unwrap()).contains("begun"));
    eventually("the command to be running", async || process_alive(&tag)).await;
    drop(body);
    eventually("the command to be interrupted", async || {
        !process_alive(&tag)
    })
    .await;
    // The lease is usable afterwards.
    assert_eq!(s.exec(&lease, "echo again").await["output"], "again\n");
}
