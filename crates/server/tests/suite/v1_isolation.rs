//! Isolation between slots and from the server, checked from inside the sandbox.

use pretty_assertions::assert_eq;
use serde_json::json;

use super::server;

#[tokio::test]
async fn slots_cannot_see_each_other_or_the_server() {
    let Some(s) = server(2).await else { return };
    let (a, slot_a) = s.lease().await;
    let (b, _) = s.lease().await;
    s.exec(&a, "echo secret-of-a > mine.txt").await;
    let data_dir = s.data.path().display().to_string();
    let r = s
        .exec(&b, &format!("ls /workspace; ls {data_dir} 2>&1; cat {data_dir}/data/{slot_a}/mine.txt 2>&1; find / -name mine.txt 2>/dev/null | head -1"))
        .await;
    let output = r["output"].as_str().unwrap();
    assert!(!output.contains("secret-of-a"), "{output}");
    assert!(output.contains("No such file or directory"), "{output}");
    // The server's environment (this test process) is not visible.
    let r = s.exec(&b, "env").await;
    let env = r["output"].as_str().unwrap();
    assert!(!env.contains("CARGO"), "{env}");
    // No network by default.
    let r = s
        .exec(
            &b,
            "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '",
        )
        .await;
    assert_eq!(r["output"], "lo\n");
}

#[tokio::test]
async fn network_is_a_lease_option() {
    let Some(s) = server(1).await else { return };
    let reply = s.post("/v1/leases", json!({"network": true})).await;
    let lease = reply.json["lease_id"].as_str().unwrap().to_owned();
    let r = s
        .exec(&lease, "cat /proc/net/dev | tail -n +3 | wc -l")
        .await;
    let host = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count()
        - 2;
    assert_eq!(r["output"], format!("{host}\n"));
}

#[tokio::test]
async fn reset_survives_symlinks_read_only_dirs_and_many_files() {
    let Some(s) = server(1).await else { return };
    let (lease, slot) = s.lease().await;
    let r = s
        .exec(
            &lease,
            "ln -s / root-link; ln -s /tmp tmp-link; mkdir -p ro/inner && touch ro/inner/f && chmod 0 ro/inner ro; \
             mkdir many && cd many && seq 1 20000 | xargs touch; cd ..; export LEFTOVER=1",
        )
        .await;
    assert_eq!(r["exit_code"], 0, "{r}");
    let reply = s.send("DELETE", &format!("/v1/leases/{lease}"), "").await;
    assert_eq!(reply.status, axum::http::StatusCode::OK);
    assert_eq!(std::fs::read_dir(s.workspace(&slot)).unwrap().count(), 0);
    assert!(std::path::Path::new("/usr/bin/env").exists());
    let health = s.send("GET", "/v1/health", "").await.json;
    assert_eq!(health["free"], 1);
    assert_eq!(health["quarantined"], json!([]));
    // The next lease of the slot starts clean: no files, no session state.
    let (next, next_slot) = s.lease().await;
    assert_eq!(next_slot, slot);
    let r = s.exec(&next, "ls -A; echo \"[${LEFTOVER:-}]\"; pwd").await;
    assert_eq!(r["output"], "[]\n/workspace\n");
}

#[tokio::test]
async fn health_reports_the_limits_in_force() {
    let Some(s) = server(1).await else { return };
    let health = s.send("GET", "/v1/health", "").await.json;
    assert_eq!(health["isolation"], "bwrap");
    assert!(health["limits"]["cgroups"] == "v1" || health["limits"]["cgroups"] == "v2");
    assert_eq!(health["limits"]["memory_bytes"], 1024 * 1024 * 1024);
    assert_eq!(health["limits"]["pids"], 512);
    assert_eq!(health["limits"]["cpu_millis"], 2000);
    assert_eq!(health["limits"]["network_default"], false);
}

#[tokio::test]
async fn a_fork_bomb_is_contained_by_the_pids_limit() {
    let Some(s) = server(1).await else { return };
    let (lease, _) = s.lease().await;
    let reply = s
        .post(
            &format!("/v1/leases/{lease}/exec"),
            json!({"command": "bomb() { bomb | bomb & }; bomb; sleep 1; echo contained", "timeout_s": 10}),
        )
        .await;
    assert_eq!(reply.status, axum::http::StatusCode::OK);
    // The host is still responsive and the slot can be released (its processes all killed).
    let reply = s.send("DELETE", &format!("/v1/leases/{lease}"), "").await;
    assert_eq!(reply.status, axum::http::StatusCode::OK);
    let (next, _) = s.lease().await;
    assert_eq!(s.exec(&next, "echo alive").await["output"], "alive\n");
}

#[tokio::test]
async fn a_slot_whose_reset_fails_is_quarantined_not_reused() {
    let Some(s) = server(2).await else { return };
    let (lease, slot) = s.lease().await;
    s.exec(&lease, "echo dirty > file").await;
    // Sabotage the reset: the trash directory a reset renames the workspace into becomes a file.
    let trash = s.data.path().join("data").join(".trash");
    std::fs::remove_dir_all(&trash).unwrap();
    std::fs::write(&trash, "not a directory").unwrap();
    let reply = s.send("DELETE", &format!("/v1/leases/{lease}"), "").await;
    assert_eq!(reply.status, axum::http::StatusCode::OK);
    let health = s.send("GET", "/v1/health", "").await.json;
    assert_eq!(health["quarantined"], json!([slot.clone()]));
    assert_eq!(health["free"], 1);
    // The dirty slot is never handed out: the only slot leased from now on is the other one.
    let (other, other_slot) = s.lease().await;
    assert_ne!(other_slot, slot);
    let reply = s.post("/v1/leases", json!({"wait_s": 0.2})).await;
    assert_eq!(reply.json["error"]["code"], "no_slot");
    assert_eq!(s.exec(&other, "ls -A").await["output"], "");
}

#[tokio::test]
async fn a_slot_whose_sandbox_was_killed_from_inside_recovers() {
    let Some(s) = server(1).await else { return };
    let (lease, _) = s.lease().await;
    // The shell's parent is the sandbox agent: killing it ends the sandbox.
    let reply = s
        .post(
            &format!("/v1/leases/{lease}/exec"),
            json!({"command": "kill -9 $PPID; sleep 5"}),
        )
        .await;
    assert!(
        reply.status.is_server_error() || reply.json["exit_code"] != 0,
        "{:?}",
        reply.json
    );
    // The next call gets a fresh session in a fresh sandbox.
    assert_eq!(s.exec(&lease, "echo back").await["output"], "back\n");
}

#[tokio::test]
async fn docker_slots_are_containers_apart_from_each_other_and_reset_on_release() {
    let Some(s) = super::docker_server(2).await else {
        return;
    };
    let health = s.send("GET", "/v1/health", axum::body::Body::empty()).await;
    assert_eq!(health.json["isolation"], "docker");
    assert_eq!(health.json["limits"]["memory_bytes"], 512 << 20);
    let (a, slot_a) = s.lease().await;
    let (b, _) = s.lease().await;
    let r = s
        .exec(
            &a,
            "test -f /.dockerenv && echo in-container; echo secret > mine.txt; export K=v",
        )
        .await;
    assert_eq!(r["output"], "in-container\n");
    assert_eq!(s.exec(&a, "echo $K $PWD").await["output"], "v /workspace\n");
    let r = s
        .exec(
            &b,
            "ls /workspace; find / -name mine.txt 2>/dev/null | head -1",
        )
        .await;
    assert_eq!(r["output"], "");
    // Release resets the slot: a new lease on it finds nothing of the last tenant.
    let released = s
        .send(
            "DELETE",
            &format!("/v1/leases/{a}"),
            axum::body::Body::empty(),
        )
        .await;
    assert!(released.status.is_success(), "{released:?}");
    // b still holds the other slot: the only free one is a's.
    let (again, slot) = s.lease().await;
    assert_eq!(slot, slot_a);
    let r = s.exec(&again, "ls /workspace; echo ${K:-unset}").await;
    assert_eq!(r["output"], "unset\n");
}
