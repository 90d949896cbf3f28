//! Bad input: a clear JSON error, the right status, nothing started, never a panic or a 500.

use axum::body::Body;
use axum::http::Request;
use axum::http::StatusCode;
use pretty_assertions::assert_eq;
use serde_json::json;
use slotbox_server::Limits;

use super::server;
use super::server_with;

#[tokio::test]
async fn malformed_bodies_and_wrong_types() {
    let Some(s) = server(1).await else { return };
    let (lease, slot) = s.lease().await;
    let uri = format!("/v1/leases/{lease}/exec");
    let cases: Vec<(&str, StatusCode, &str)> = vec![
        ("{not json", StatusCode::BAD_REQUEST, "invalid_json"),
        (
            "[1, 2]",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        ("{}", StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (
            r#"{"command": 5}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            r#"{"command": "touch ran", "timeout_s": "5"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            r#"{"command": "touch ran", "timeout_s": -1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            r#"{"command": "touch ran", "timeout_s": 0}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            r#"{"command": "touch ran", "timeout_s": 1e12}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            r#"{"command": "touch ran", "max_output_chars": -5}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            r#"{"command": "touch ran", "stdin": 7}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let reply = s.send("POST", &uri, body).await;
        assert_eq!(reply.status, status, "{body}: {:?}", reply.json);
        assert_eq!(reply.json["error"]["code"], code, "{body}");
        assert!(!reply.json["error"]["message"].as_str().unwrap().is_empty());
    }
    assert!(
        !s.workspace(&slot).join("ran").exists(),
        "a rejected request started its command"
    );
    let reply = s.post("/v1/leases", json!({"network": "false"})).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "\"false\" is not a boolean"
    );
    let reply = s.post("/v1/leases", json!({"ttl_s": "600"})).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn oversize_body_is_413() {
    let limits = Limits {
        max_body_bytes: 1024,
        ..Limits::default()
    };
    let Some(s) = server_with(1, None, limits).await else {
        return;
    };
    let (lease, _) = s.lease().await;
    let big = json!({"command": "true", "stdin": "x".repeat(4096)}).to_string();
    let reply = s
        .send("POST", &format!("/v1/leases/{lease}/exec"), big)
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json["error"]["code"], "body_too_large");
    let reply = s
        .send(
            "PUT",
            &format!("/v1/leases/{lease}/files?path=f"),
            vec![0u8; 4096],
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn unknown_ids_and_routes_are_json_404s() {
    let Some(s) = server(1).await else { return };
    for (method, uri) in [
        ("POST", "/v1/leases/deadbeef/exec"),
        ("POST", "/v1/leases/deadbeef/renew"),
        ("POST", "/v1/leases/deadbeef/interrupt"),
        ("DELETE", "/v1/leases/deadbeef"),
    ] {
        let reply = s.send(method, uri, r#"{"command": "true"}"#).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(reply.json["error"]["code"], "unknown_lease");
    }
    let reply = s.send("GET", "/v1/nothing-here", "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json["error"]["code"], "not_found");
}

#[tokio::test]
async fn token_is_required_except_for_health() {
    let Some(s) = server_with(1, Some("s3cret"), Limits::default()).await else {
        return;
    };
    let anonymous = s.with_token(None);
    let reply = anonymous.post("/v1/leases", json!({})).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json["error"]["code"], "unauthorized");
    let wrong = s.with_token(Some("guess"));
    assert_eq!(
        wrong.post("/v1/leases", json!({})).await.status,
        StatusCode::UNAUTHORIZED
    );
    let reply = anonymous.send("GET", "/v1/health", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        s.post("/v1/leases", json!({})).await.status,
        StatusCode::CREATED
    );
    // A malformed header is a 401 too, not a 400 or 500.
    let request = Request::builder()
        .method("POST")
        .uri("/v1/leases")
        .header("authorization", "Basic czNjcmV0")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(s.raw(request).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn openapi_describes_every_v1_route() {
    let Some(s) = server(1).await else { return };
    let reply = s.send("GET", "/openapi.json", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    let paths = reply.json["paths"].as_object().unwrap();
    for path in [
        "/v1/leases",
        "/v1/leases/{lease_id}",
        "/v1/leases/{lease_id}/renew",
        "/v1/leases/{lease_id}/exec",
        "/v1/leases/{lease_id}/interrupt",
        "/v1/leases/{lease_id}/files",
        "/v1/health",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    let schemas = reply.json["components"]["schemas"].as_object().unwrap();
    for schema in [
        "ExecResult",
        "ExecBody",
        "Lease",
        "CreateLease",
        "ErrorBody",
        "Health",
    ] {
        assert!(schemas.contains_key(schema), "{schema} missing");
    }
    assert_eq!(
        schemas["ExecBody"]["required"],
        json!(["command"]),
        "only `command` is required"
    );
}

#[tokio::test]
async fn metrics_and_openapi_need_the_token_too() {
    let Some(s) = server_with(1, Some("t0ken"), Limits::default()).await else {
        return;
    };
    let anonymous = s.with_token(None);
    assert_eq!(
        anonymous.send("GET", "/metrics", "").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        anonymous.send("GET", "/openapi.json", "").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.send("GET", "/metrics", "").await.status, StatusCode::OK);
}
