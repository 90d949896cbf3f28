//! The seed-compatible API, checked against the seed's documented shapes and strings
//! (`../shared/docs/seed-sandbox-server.md` §4–§6), and against its defects, which must be gone.

use axum::http::StatusCode;
use pretty_assertions::assert_eq;
use serde_json::Value;
use serde_json::json;

use super::server;

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn execute_bash_envelope_exit_codes_and_stderr_format() {
    let Some(s) = server(2).await else { return };
    let reply = s
        .post("/execute", json!({"slot_id": "slot_0", "tool": "bash", "args": {"command": "echo out; echo err >&2; exit 3"}, "execution_id": "e-1"}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let r = reply.json;
    assert_eq!(
        keys(&r),
        vec!["error", "execution_id", "metadata", "output", "success"]
    );
    assert_eq!(r["success"], false);
    assert_eq!(r["output"], "out\n\n[stderr]\nerr\n");
    assert_eq!(r["error"], "Exit code: 3");
    assert_eq!(r["execution_id"], "e-1");
    assert_eq!(r["metadata"]["exit_code"], 3);
    assert_eq!(r["metadata"]["sandboxed"], true);
    assert_eq!(r["metadata"]["network_isolated"], true);

    let r = s
        .post(
            "/execute",
            json!({"slot_id": "slot_1", "tool": "bash", "args": {"command": "echo only-err >&2"}}),
        )
        .await
        .json;
    assert_eq!(
        (
            r["success"].as_bool(),
            r["output"].as_str(),
            r["error"].as_str()
        ),
        (Some(true), Some("only-err\n"), Some(""))
    );
    assert_eq!(r["execution_id"], Value::Null);
    // bash, not sh: [[ ]] works (the seed ran /bin/sh).
    let r = s.post("/execute", json!({"slot_id": "slot_0", "tool": "bash", "args": {"command": "[[ 1 == 1 ]] && echo bash"}})).await.json;
    assert_eq!(r["output"], "bash\n");
    // Killed by a signal: 128+N, with the signal in metadata.
    let r = s
        .post(
            "/execute",
            json!({"slot_id": "slot_0", "tool": "bash", "args": {"command": "kill -9 $$"}}),
        )
        .await
        .json;
    assert_eq!(r["metadata"]["exit_code"], 137);
    assert_eq!(r["metadata"]["signal"], 9);
}

#[tokio::test]
async fn timeout_keeps_partial_output_and_the_seed_markers() {
    let Some(s) = server(1).await else { return };
    let r = s
        .post("/execute", json!({"slot_id": "slot_0", "tool": "bash", "args": {"command": "echo partial; sleep 30"}, "timeout": 0.5}))
        .await
        .json;
    assert_eq!(r["success"], false);
    assert_eq!(r["error"], "Command timed out after 0.5s");
    assert_eq!(r["metadata"]["exit_code"], -1);
    assert_eq!(r["metadata"]["timeout"], true);
    assert!(
        r["output"].as_str().unwrap().starts_with("partial\n"),
        "{r}"
    );
}

#[tokio::test]
async fn bash_is_stateless_and_bash_stateful_keeps_cwd_and_env() {
    let Some(s) = server(1).await else { return };
    let call = |tool: &str, command: &str| json!({"slot_id": "slot_0", "tool": tool, "args": {"command": command}});
    s.post("/execute", call("bash", "export X=1; cd /tmp"))
        .await;
    let r = s
        .post("/execute", call("bash", "echo \"[${X:-}]\"; pwd"))
        .await
        .json;
    assert_eq!(r["output"], "[]\n/workspace\n");
    s.post(
        "/execute",
        call("bash_stateful", "export X=1; mkdir -p d; cd d"),
    )
    .await;
    let r = s
        .post("/execute", call("bash_stateful", "echo \"[$X]\"; pwd"))
        .await
        .json;
    assert_eq!(r["output"], "[1]\n/workspace/d\n");
    assert_eq!(r["metadata"]["stateful"], true);
    let r = s.post("/execute", call("bash_stateful", "   ")).await.json;
    assert_eq!(r["error"], "Missing command");
}

#[tokio::test]
async fn file_tools_round_trip_and_refuse_escapes() {
    let Some(s) = server(1).await else { return };
    let write = |path: &str, content: Value| json!({"slot_id": "slot_0", "tool": "write_file", "args": {"path": path, "content": content}});
    let read =
        |path: &str| json!({"slot_id": "slot_0", "tool": "read_file", "args": {"path": path}});
    let r = s
        .post("/execute", write("notes/a.txt", json!("héllo ✓\r\nline")))
        .await
        .json;
    assert_eq!(r["success"], true, "{r}");
    // Bytes, not characters (the seed counted 13 characters for these 16 bytes).
    assert_eq!(r["output"], "Successfully wrote 16 bytes to notes/a.txt");
    let r = s.post("/execute", read("notes/a.txt")).await.json;
    // Exactly what is on disk: no newline translation.
    assert_eq!(r["output"], "héllo ✓\r\nline");
    // The path the sandboxed shell uses works too.
    let r = s
        .post("/execute", read("/workspace/notes/a.txt"))
        .await
        .json;
    assert_eq!(r["success"], true);
    let r = s.post("/execute", read("missing.txt")).await.json;
    assert_eq!(r["error"], "File not found: missing.txt");
    let r = s.post("/execute", read("notes")).await.json;
    assert_eq!(r["error"], "Not a file: notes");
    for escape in ["../../etc/passwd", "/etc/passwd"] {
        let r = s.post("/execute", read(escape)).await.json;
        assert_eq!(
            r["error"], "Access denied: path outside workspace",
            "{escape}"
        );
    }
    s.post("/execute", json!({"slot_id": "slot_0", "tool": "bash", "args": {"command": "ln -s /etc/hostname link"}})).await;
    let r = s.post("/execute", read("link")).await.json;
    assert_eq!(r["error"], "Access denied: path outside workspace");
    let reply = s.post("/execute", write("x.txt", Value::Null)).await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "null content is a request error, not a crash"
    );
    let r = s
        .post("/execute", write("big.txt", json!("x".repeat(100_001))))
        .await
        .json;
    assert_eq!(r["error"], "Content too large: 100001 bytes (max 100000)");
}

#[tokio::test]
async fn errors_unknown_slot_tool_and_strict_types() {
    let Some(s) = server(1).await else { return };
    let r = s
        .post(
            "/execute",
            json!({"slot_id": "slot_9", "tool": "bash", "args": {"command": "true"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["error"], "Unknown slot: slot_9");
    assert_eq!(r.json["metadata"], json!({}));
    let r = s
        .post("/execute", json!({"slot_id": "slot_0", "tool": "nope"}))
        .await
        .json;
    assert_eq!(r["error"], "Unknown tool: nope");
    let r = s
        .post(
            "/execute",
            json!({"slot_id": "slot_0", "tool": "tmux", "args": {"action": "start"}}),
        )
        .await
        .json;
    assert_eq!(r["success"], false);
    assert_eq!(r["metadata"]["unsupported"], true);
    let r = s.send("POST", "/execute", "{oops").await;
    assert_eq!(
        (r.status, r.json.clone()),
        (
            StatusCode::BAD_REQUEST,
            json!({"success": false, "error": "Invalid JSON"})
        )
    );
    // What the seed answered with 500s, or coerced, is a 400 here, with nothing run.
    for body in [
        json!([1, 2]),
        json!({"slot_id": "slot_0", "tool": "bash", "args": "echo"}),
        json!({"slot_id": "slot_0", "tool": "bash", "args": {"command": "touch ran"}, "timeout": "5"}),
        json!({"slot_id": "slot_0", "tool": "bash", "args": {"command": "touch ran"}, "timeout": 0}),
        json!({"slot_id": "slot_0", "tool": "bash", "args": {"command": "touch ran"}, "timeout": -1}),
        json!({"slot_id": "slot_0", "tool": "bash", "args": {"command": "touch ran", "allow_network": "false"}}),
        json!({"slot_id": 0, "tool": "bash"}),
    ] {
        let reply = s.post("/execute", body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {:?}",
            reply.json
        );
        assert_eq!(reply.json["success"], false);
        assert!(reply.json["error"].is_string());
    }
    assert!(!s.workspace("slot_0").join("ran").exists());
}

#[tokio::test]
async fn null_timeout_means_the_default_not_forever() {
    let Some(s) = server(1).await else { return };
    let r = s
        .post("/execute", json!({"slot_id": "slot_0", "tool": "bash", "args": {"command": "echo fine"}, "timeout": null}))
        .await
        .json;
    assert_eq!(r["success"], true);
}

#[tokio::test]
async fn batch_runs_in_order_per_slot_and_isolates_bad_items() {
    let Some(s) = server(2).await else { return };
    let body = json!([
        {"slot_id": "slot_0", "tool": "bash", "args": {"command": "echo one > f"}},
        {"slot_id": "slot_1", "tool": "bash", "args": {"command": "echo other"}},
        {"slot_id": "slot_0", "tool": "bash", "args": {"command": "echo two >> f; cat f"}},
        "not an object",
        {"slot_id": "slot_0", "tool": "bash", "args": "bad"},
    ]);
    let reply = s.post("/batch", body).await;
    assert_eq!(reply.status, StatusCode::OK);
    let items = reply.json.as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[1]["output"], "other\n");
    assert_eq!(items[2]["output"], "one\ntwo\n");
    assert_eq!(
        items[3],
        json!({"success": false, "error": "Expected a JSON object"})
    );
    assert_eq!(
        items[4],
        json!({"success": false, "error": "`args` must be an object"})
    );
    let reply = s.post("/batch", json!({"not": "an array"})).await;
    assert_eq!(
        (reply.status, reply.json),
        (
            StatusCode::BAD_REQUEST,
            json!({"success": false, "error": "Expected array of requests"})
        )
    );
}

#[tokio::test]
async fn reset_health_and_slots() {
    let Some(s) = server(2).await else { return };
    s.post("/execute", json!({"slot_id": "slot_0", "tool": "bash_stateful", "args": {"command": "export Y=1; ln -s / root; ln -s /tmp t; mkdir ro; chmod 0 ro; touch f"}})).await;
    let r = s.post("/reset", json!({"slot_id": "slot_0"})).await.json;
    assert_eq!(
        r,
        json!({"success": true, "output": "Reset workspace for slot_0", "error": "", "execution_id": null, "metadata": {}})
    );
    assert_eq!(std::fs::read_dir(s.workspace("slot_0")).unwrap().count(), 0);
    let r = s.post("/execute", json!({"slot_id": "slot_0", "tool": "bash_stateful", "args": {"command": "echo \"[${Y:-}]\"; ls -A"}})).await.json;
    assert_eq!(r["output"], "[]\n");
    let r = s.post("/reset", json!({"slot_id": "slot_7"})).await.json;
    assert_eq!(r["error"], "Unknown slot: slot_7");

    let health = s.send("GET", "/health", "").await.json;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["slots"], 2);
    assert_eq!(health["available"], 2);
    assert_eq!(health["executing"], 0);
    assert_eq!(health["bwrap_available"], true);
    let slots = s.send("GET", "/slots", "").await.json;
    assert_eq!(slots["slots"][1]["slot_id"], "slot_1");
    assert_eq!(slots["slots"][1]["state"], "available");
    assert_eq!(slots["slots"][1]["current_execution_id"], Value::Null);
}

#[tokio::test]
async fn artifacts_read_list_archive() {
    use base64::Engine;
    let Some(s) = server(1).await else { return };
    s.post("/execute", json!({"slot_id": "slot_0", "tool": "bash", "args": {"command": "mkdir -p out && printf 'yo\\n' > b.log && printf 'aaa' > out/a.txt && ln -s /etc/passwd out/escape"}})).await;
    let r = s
        .post(
            "/artifacts/read",
            json!({"slot_id": "slot_0", "path": "b.log", "include_sha256": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["content"], "yo\n");
    assert_eq!(r.json["mime"], "text/plain");
    assert_eq!(r.json["file_size"], 3);
    assert_eq!(r.json["truncated"], false);
    // sha256 of "yo\n" (from sha256sum).
    assert_eq!(
        r.json["sha256"],
        "ebe95d10cc11e27bd8d4d1ce91bc725665ddbaa6ca2498ef38a88a58ad48cdb4"
    );
    let r = s
        .post(
            "/artifacts/read",
            json!({"slot_id": "slot_0", "path": "b.log", "encoding": "base64", "max_bytes": 2}),
        )
        .await
        .json;
    assert_eq!(
        r["content"],
        base64::engine::general_purpose::STANDARD.encode("yo")
    );
    assert_eq!(r["truncated"], true);
    let r = s
        .post(
            "/artifacts/read",
            json!({"slot_id": "slot_0", "path": "out/escape"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json["error"], "Access denied: path outside workspace");
    let r = s
        .post(
            "/artifacts/read",
            json!({"slot_id": "slot_0", "path": "none"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("Not found: none"))
    );
    let r = s
        .post(
            "/artifacts/read",
            json!({"slot_id": "slot_9", "path": "b.log"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = s
        .post(
            "/artifacts/list",
            json!({"slot_id": "slot_0", "recursive": true}),
        )
        .await
        .json;
    let paths: Vec<&str> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["b.log", "out", "out/a.txt", "out/escape"]);
    assert_eq!(r["truncated"], false);
    // Exactly max_entries entries is not "truncated" (the seed's off-by-one).
    let r = s
        .post(
            "/artifacts/list",
            json!({"slot_id": "slot_0", "max_entries": 2}),
        )
        .await
        .json;
    assert_eq!(
        (
            r["entries"].as_array().unwrap().len(),
            r["truncated"].as_bool()
        ),
        (2, Some(false))
    );
    let r = s
        .post(
            "/artifacts/list",
            json!({"slot_id": "slot_0", "recursive": true, "max_entries": 2}),
        )
        .await
        .json;
    assert_eq!(r["truncated"], true);

    let r = s
        .post(
            "/artifacts/archive",
            json!({"slot_id": "slot_0", "format": "tgz"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json["format"], "tgz");
    assert_eq!(r.json["entry_count"], 2);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r.json["content"].as_str().unwrap())
        .unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec!["b.log", "out/a.txt"]);
    let r = s
        .post(
            "/artifacts/archive",
            json!({"slot_id": "slot_0", "max_bytes": 10}),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.json["error"]
            .as_str()
            .unwrap()
            .starts_with("Archive too large")
    );
    let r = s
        .post(
            "/artifacts/archive",
            json!({"slot_id": "slot_0", "format": "zip"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("Unsupported archive format: zip")
        )
    );
}
