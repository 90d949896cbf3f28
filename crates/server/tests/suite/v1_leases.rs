//! Lease lifecycle: grant, session semantics, renew, waiting, expiry, interrupt, release.

use std::time::Duration;

use axum::http::StatusCode;
use pretty_assertions::assert_eq;
use serde_json::json;

use super::eventually;
use super::process_alive;
use super::server;

#[tokio::test]
async fn lease_exec_session_and_release() {
    let Some(s) = server(2).await else { return };
    let reply = s.post("/v1/leases", json!({"ttl_s": 60})).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let lease = reply.json["lease_id"].as_str().unwrap().to_owned();
    assert!(reply.json["slot_id"].as_str().unwrap().starts_with("slot_"));
    let expires = time::OffsetDateTime::parse(
        reply.json["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let remaining = expires - time::OffsetDateTime::now_utc();
    assert!(remaining > time::Duration::seconds(55) && remaining <= time::Duration::seconds(60));

    let r = s
        .exec(
            &lease,
            "export GREETING=hi; greet() { echo \"$GREETING $1\"; }; mkdir -p d && cd d",
        )
        .await;
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["cwd"], "/workspace/d");
    let r = s.exec(&lease, "greet there; pwd").await;
    assert_eq!(r["output"], "hi there\n/workspace/d\n");
    for field in [
        "exit_code",
        "output",
        "timed_out",
        "truncated",
        "cwd",
        "duration_ms",
    ] {
        assert!(r.get(field).is_some(), "missing {field}");
    }

    let reply = s.send("DELETE", &format!("/v1/leases/{lease}"), "").await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = s
        .post(
            &format!("/v1/leases/{lease}/exec"),
            json!({"command": "true"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json["error"]["code"], "unknown_lease");
    let reply = s.send("DELETE", &format!("/v1/leases/{lease}"), "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn timeout_truncation_and_stdin_through_v1() {
    let Some(s) = server(1).await else { return };
    let (lease, _) = s.lease().await;
    let uri = format!("/v1/leases/{lease}/exec");
    let r = s
        .post(
            &uri,
            json!({"command": "echo partial; sleep 30", "timeout_s": 0.5}),
        )
        .await
        .json;
    assert_eq!(r["exit_code"], 124);
    assert_eq!(r["timed_out"], true);
    assert_eq!(r["output"], "partial\n\n[Command timed out after 0.5s]");
    let r = s
        .post(
            &uri,
            json!({"command": "seq 1 100000", "max_output_chars": 1000}),
        )
        .await
        .json;
    assert_eq!(r["truncated"], true);
    assert!(r["output"].as_str().unwrap().contains("[OUTPUT TRUNCATED"));
    let r = s
        .post(&uri, json!({"command": "tr a-z A-Z", "stdin": "piped"}))
        .await
        .json;
    assert_eq!(r["output"], "PIPED");
    let r = s
        .post(&uri, json!({"command": "cat; echo closed"}))
        .await
        .json;
    assert_eq!(r["output"], "closed\n");
}

#[tokio::test]
async fn no_slot_after_wait_and_first_come_first_served() {
    let Some(s) = server(1).await else { return };
    let (holder, _) = s.lease().await;
    let started = std::time::Instant::now();
    let reply = s.post("/v1/leases", json!({"wait_s": 0.3})).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json["error"]["code"], "no_slot");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Three waiters queue in order (the current-thread runtime runs each spawned task up to its
    // wait on the slot queue when the test task yields).
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for n in 0..3 {
        let t = s.client.clone();
        let order = std::sync::Arc::clone(&order);
        waiters.push(tokio::spawn(async move {
            let reply = t.post("/v1/leases", json!({"wait_s": 30})).await;
            assert_eq!(reply.status, StatusCode::CREATED);
            order.lock().unwrap().push(n);
            let lease = reply.json["lease_id"].as_str().unwrap().to_owned();
            let reply = t.send("DELETE", &format!("/v1/leases/{lease}"), "").await;
            assert_eq!(reply.status, StatusCode::OK);
        }));
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }
    let reply = s.send("DELETE", &format!("/v1/leases/{holder}"), "").await;
    assert_eq!(reply.status, StatusCode::OK);
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
}

#[tokio::test]
async fn renew_extends_and_expiry_frees_the_slot() {
    let Some(s) = server(1).await else { return };
    let reply = s.post("/v1/leases", json!({"ttl_s": 0.6})).await;
    let lease = reply.json["lease_id"].as_str().unwrap().to_owned();
    let slot = reply.json["slot_id"].as_str().unwrap().to_owned();
    s.exec(&lease, "echo left-behind > file").await;
    let reply = s
        .post(&format!("/v1/leases/{lease}/renew"), json!({"ttl_s": 120}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let expires = time::OffsetDateTime::parse(
        reply.json["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(expires - time::OffsetDateTime::now_utc() > time::Duration::seconds(100));
    // Shorten it again and let it expire: the reaper resets and frees the slot.
    s.post(&format!("/v1/leases/{lease}/renew"), json!({"ttl_s": 0.2}))
        .await;
    eventually("the expired lease's slot to be free again", async || {
        s.send("GET", "/v1/health", "").await.json["free"] == 1
    })
    .await;
    assert!(
        !s.workspace(&slot).join("file").exists(),
        "expired slot was not reset"
    );
    let reply = s
        .post(
            &format!("/v1/leases/{lease}/exec"),
            json!({"command": "true"}),
        )
        .await;
    assert_eq!(reply.json["error"]["code"], "unknown_lease");
}

#[tokio::test]
async fn interrupt_stops_the_running_command_with_130() {
    let Some(s) = server(1).await else { return };
    let (lease, _) = s.lease().await;
    let exec = {
        let t = s.client.clone();
        let lease = lease.clone();
        tokio::spawn(async move {
            t.post(
                &format!("/v1/leases/{lease}/exec"),
                json!({"command": "echo started; exec sleep 60"}),
            )
            .await
        })
    };
    let uri = format!("/v1/leases/{lease}/interrupt");
    eventually("the command to be running", async || {
        s.post(&uri, json!({})).await.json["interrupted"] == true
    })
    .await;
    let reply = exec.await.unwrap();
    assert_eq!(reply.json["exit_code"], 130);
    assert_eq!(reply.json["interrupted"], true);
    assert!(
        reply.json["output"]
            .as_str()
            .unwrap()
            .ends_with("[Command interrupted]")
    );
    let reply = s.post(&uri, json!({})).await;
    assert_eq!(reply.json["interrupted"], false);
}

#[tokio::test]
async fn release_kills_the_running_command_and_resets_the_slot() {
    let Some(s) = server(1).await else { return };
    let (lease, slot) = s.lease().await;
    let tag = format!("slotbox_release_{}", std::process::id());
    let exec = {
        let t = s.client.clone();
        let lease = lease.clone();
        let tag = tag.clone();
        tokio::spawn(async move {
            t.post(
                &format!("/v1/leases/{lease}/exec"),
                json!({"command": format!("touch made; trap '' TERM; exec -a {tag} sleep 60")}),
            )
            .await
        })
    };
    eventually("the command to be running", async || process_alive(&tag)).await;
    let reply = s.send("DELETE", &format!("/v1/leases/{lease}"), "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        !process_alive(&tag),
        "the slot's command survived its release: {}",
        String::from_utf8_lossy(
            &std::process::Command::new("ps")
                .args(["-eo", "pid,ppid,stat,args"])
                .output()
                .unwrap()
                .stdout
        )
        .lines()
        .filter(|line| line.contains("slotbox_release") || line.contains("bwrap"))
        .collect::<Vec<_>>()
        .join("\n")
    );
    assert_eq!(std::fs::read_dir(s.workspace(&slot)).unwrap().count(), 0);
    let reply = exec.await.unwrap();
    assert_eq!(reply.json["exit_code"], 130);
}

#[tokio::test]
async fn dropped_request_kills_its_command() {
    let Some(s) = server(1).await else { return };
    let (lease, _) = s.lease().await;
    let tag = format!("slotbox_dropped_{}", std::process::id());
    let uri = format!("/v1/leases/{lease}/exec");
    let call = s.post(&uri, json!({"command": format!("exec -a {tag} sleep 60")}));
    tokio::select! {
        _ = call => panic!("cannot finish"),
        () = eventually("the command to be running", async || process_alive(&tag)) => {}
    }
    eventually("the abandoned command to be killed", async || {
        !process_alive(&tag)
    })
    .await;
    // And the slot is usable again.
    assert_eq!(s.exec(&lease, "echo ok").await["output"], "ok\n");
}

#[tokio::test]
async fn metrics_count_commands_leases_and_slots() {
    let Some(s) = server(2).await else { return };
    let (lease, _) = s.lease().await;
    s.exec(&lease, "true").await;
    s.exec(&lease, "exit 2").await;
    s.post(
        &format!("/v1/leases/{lease}/exec"),
        json!({"command": "sleep 5", "timeout_s": 0.2}),
    )
    .await;
    s.send("DELETE", &format!("/v1/leases/{lease}"), "").await;
    s.lease().await;
    let reply = s.send("GET", "/metrics", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8(reply.bytes).unwrap();
    for line in [
        "slotbox_commands_total{outcome=\"ok\"} 1",
        "slotbox_commands_total{outcome=\"nonzero\"} 1",
        "slotbox_commands_total{outcome=\"timeout\"} 1",
        "slotbox_leases_granted_total 2",
        "slotbox_leases_released_total 1",
        "slotbox_slots{state=\"free\"} 1",
        "slotbox_slots{state=\"leased\"} 1",
        "slotbox_command_duration_seconds_count 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
}

#[tokio::test]
async fn a_leased_slot_starts_its_sandbox_before_the_first_command() {
    let Some(s) = server(1).await else { return };
    let workspace = s.workspace("slot_0");
    let needle = workspace.to_string_lossy().into_owned();
    assert!(!process_alive(&needle), "no sandbox before a lease");
    let (lease, _) = s.lease().await;
    // No command sent: the sandbox (bwrap, bound to this workspace) comes up on its own.
    eventually("the leased slot's sandbox to start", async || {
        process_alive(&needle)
    })
    .await;
    // And it is the one the lease's commands run in: state set now is seen next.
    let reply = s
        .post(
            &format!("/v1/leases/{lease}/exec"),
            json!({"command": "export EARLY=1; echo $$ > /tmp/pid"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = s
        .post(
            &format!("/v1/leases/{lease}/exec"),
            json!({"command": "echo $EARLY"}),
        )
        .await;
    assert_eq!(reply.json["output"], "1\n");
    let reply = s.send("DELETE", &format!("/v1/leases/{lease}"), "").await;
    assert_eq!(reply.status, StatusCode::OK);
    eventually("the released slot's sandbox to stop", async || {
        !process_alive(&needle)
    })
    .await;
}

#[tokio::test]
async fn a_lease_released_at_once_leaves_no_sandbox_behind() {
    let Some(s) = server(1).await else { return };
    let needle = s.workspace("slot_0").to_string_lossy().into_owned();
    for _ in 0..5 {
        let (lease, _) = s.lease().await;
        let reply = s.send("DELETE", &format!("/v1/leases/{lease}"), "").await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // Whatever the early starts were doing when their leases ended, none outlives them (an
    // early start that gets the slot after its lease ended sees that and starts nothing).
    eventually("no sandbox on the free slot", async || {
        !process_alive(&needle)
    })
    .await;
    let health = s.send("GET", "/v1/health", "").await;
    assert_eq!(health.json["free"], 1);
}
