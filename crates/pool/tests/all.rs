//! The pool over real `slotbox serve` processes (the local scheduler), reached through the pool's
//! own router on loopback.

// Test helpers outside #[test] functions: a failed setup step should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use pretty_assertions::assert_eq;
use slotbox_client::Client;
use slotbox_client::ErrorCode;
use slotbox_pool::LocalConfig;
use slotbox_pool::LocalScheduler;
use slotbox_pool::Pool;
use slotbox_protocol::v1::CreateLease;
use slotbox_protocol::v1::ExecBody;

/// A pool of `servers` local servers with `slots` slots each, served on loopback.
async fn pool(
    servers: usize,
    slots: usize,
) -> Option<(Arc<Pool>, Arc<LocalScheduler>, Client, String)> {
    let binary = match slotbox_test_support::workspace_binary("slotbox") {
        Ok(binary) => binary,
        Err(reason) => {
            slotbox_test_support::require("the slotbox binary", Err(reason));
            return None;
        }
    };
    let scheduler = Arc::new(
        LocalScheduler::new(LocalConfig {
            binary,
            slots_per_server: slots,
            serve_args: Vec::new(),
        })
        .unwrap(),
    );
    let pool = Pool::new(scheduler.clone(), None);
    let (client, base) = common::fill_and_serve(&pool, servers).await;
    Some((pool, scheduler, client, base))
}

fn command(text: &str) -> ExecBody {
    ExecBody::new(text)
}

#[tokio::test]
async fn leases_spread_over_servers_and_forward_every_call() {
    let Some((pool, _scheduler, client, _base)) = pool(2, 2).await else {
        return;
    };
    let mut leases = Vec::new();
    for _ in 0..4 {
        leases.push(client.lease(&CreateLease::default()).await.unwrap());
    }
    let mut servers: Vec<&str> = leases
        .iter()
        .map(|lease| lease.slot_id.split('/').next().unwrap())
        .collect();
    servers.sort();
    servers.dedup();
    assert_eq!(servers.len(), 2, "{leases:?}");
    let error = client
        .lease(&CreateLease {
            wait_s: Some(0.2),
            ..CreateLease::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::NoSlot));

    let lease = &leases[0].lease_id;
    client
        .exec(lease, &command("export X=1; mkdir -p d; cd d"))
        .await
        .unwrap();
    let result = client.exec(lease, &command("echo $X; pwd")).await.unwrap();
    assert_eq!(result.output, "1\n/workspace/d\n");
    client
        .write_file(lease, "f.txt", b"pooled".to_vec())
        .await
        .unwrap();
    assert_eq!(client.read_file(lease, "f.txt").await.unwrap(), b"pooled");
    client.renew(lease, None).await.unwrap();
    let released = client.release(lease).await.unwrap();
    assert!(released.slot_id.contains('/'));
    assert_eq!(pool.capacity(), (2, 4, 1));
    let error = client.exec(lease, &command("true")).await.unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::UnknownLease));
    pool.shutdown().await;
}

#[tokio::test]
async fn a_killed_server_loses_its_leases_and_is_replaced() {
    let Some((pool, scheduler, client, _base)) = pool(2, 1).await else {
        return;
    };
    let a = client.lease(&CreateLease::default()).await.unwrap();
    let b = client.lease(&CreateLease::default()).await.unwrap();
    let victim = a.slot_id.split('/').next().unwrap().to_owned();
    let pid = scheduler.server_pid(&victim).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The next call on its lease answers slot_lost, promptly, and keeps answering it.
    let error = client
        .exec(&a.lease_id, &command("true"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::SlotLost));
    let error = client
        .exec(&a.lease_id, &command("true"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::SlotLost));
    // The other server's lease is untouched.
    assert_eq!(
        client
            .exec(&b.lease_id, &command("echo ok"))
            .await
            .unwrap()
            .output,
        "ok\n"
    );
    assert_eq!(pool.capacity().0, 1);
    pool.replace_lost(2).await;
    assert_eq!(pool.capacity(), (2, 2, 1));
    let c = client.lease(&CreateLease::default()).await.unwrap();
    assert_ne!(c.slot_id.split('/').next().unwrap(), victim);
    pool.shutdown().await;
}

#[tokio::test]
async fn shutdown_leaves_no_server_running() {
    let Some((pool, scheduler, client, _base)) = pool(2, 1).await else {
        return;
    };
    let lease = client.lease(&CreateLease::default()).await.unwrap();
    let server = lease.slot_id.split('/').next().unwrap().to_owned();
    let pid = scheduler.server_pid(&server).unwrap();
    pool.shutdown().await;
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            // A zombie until reaped is gone for all purposes; anything else is a leak.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| stat.contains(") Z "))
                .unwrap_or(true)
        }
    );
    assert_eq!(pool.capacity().0, 0);
}

#[tokio::test]
async fn an_abandoned_lease_returns_its_slot_when_it_expires() {
    let Some((pool, _scheduler, client, _base)) = pool(1, 1).await else {
        return;
    };
    let lease = client
        .lease(&CreateLease {
            ttl_s: Some(0.5),
            ..CreateLease::default()
        })
        .await
        .unwrap();
    assert_eq!(pool.capacity(), (1, 1, 0));
    // Nobody releases it; after its expiry the pool (and the server) take the slot back, and a
    // waiting client gets it.
    let next = client
        .lease(&CreateLease {
            wait_s: Some(10.0),
            ..CreateLease::default()
        })
        .await
        .unwrap();
    assert_ne!(next.lease_id, lease.lease_id);
    assert_eq!(
        client
            .exec(&next.lease_id, &command("echo fresh"))
            .await
            .unwrap()
            .output,
        "fresh\n"
    );
    let error = client
        .exec(&lease.lease_id, &command("true"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::UnknownLease));
    pool.shutdown().await;
}

#[tokio::test]
async fn streaming_exec_passes_through_the_pool() {
    let Some((pool, _scheduler, client, _base)) = pool(1, 1).await else {
        return;
    };
    let lease = client.lease(&CreateLease::default()).await.unwrap();
    let mut chunks = Vec::new();
    let result = client
        .exec_streaming(
            &lease.lease_id,
            &command("for i in 1 2 3; do echo part$i; sleep 0.05; done"),
            |chunk| chunks.push(chunk.to_owned()),
        )
        .await
        .unwrap();
    assert_eq!(chunks.concat(), "part1\npart2\npart3\n");
    assert_eq!(result.output, "part1\npart2\npart3\n");
    pool.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_json_errors_and_starts_nothing() {
    let Some((pool, _scheduler, client, base)) = pool(1, 1).await else {
        return;
    };
    let lease = client.lease(&CreateLease::default()).await.unwrap();
    let http = reqwest::Client::new();
    let cases: Vec<(&str, u16, &str)> = vec![
        ("{oops", 400, "invalid_json"),
        (r#"{"command": 5}"#, 422, "invalid_request"),
        (
            r#"{"command": "touch ran", "timeout_s": "5"}"#,
            422,
            "invalid_request",
        ),
        (
            r#"{"command": "touch ran", "timeout_s": -1}"#,
            422,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let response = http
            .post(format!("{base}/v1/leases/{}/exec", lease.lease_id))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let value: serde_json::Value = response.json().await.unwrap();
        assert_eq!(value["error"]["code"], code, "{body}");
    }
    let result = client
        .exec(&lease.lease_id, &command("ls ran 2>&1 || echo none"))
        .await
        .unwrap();
    assert!(result.output.contains("No such file"), "{}", result.output);
    let response = http
        .put(format!(
            "{base}/v1/leases/{}/files?path=big",
            lease.lease_id
        ))
        .body(vec![0u8; 17 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let response = http.get(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let response = http
        .post(format!("{base}/v1/leases/nope/exec"))
        .body(r#"{"command": "true"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    pool.shutdown().await;
}

#[tokio::test]
async fn out_of_range_numbers_are_refused_not_panicked_on() {
    let Some((pool, _scheduler, client, base)) = pool(1, 1).await else {
        return;
    };
    let lease = client.lease(&CreateLease::default()).await.unwrap();
    let http = reqwest::Client::new();
    for (path, body) in [
        ("renew", r#"{"ttl_s": -1}"#),
        ("renew", r#"{"ttl_s": 1e300}"#),
        ("exec", r#"{"command": "true", "timeout_s": 1e20}"#),
    ] {
        let response = http
            .post(format!("{base}/v1/leases/{}/{path}", lease.lease_id))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 422, "{path} {body}");
    }
    // The lease still works.
    assert_eq!(
        client
            .exec(&lease.lease_id, &command("echo ok"))
            .await
            .unwrap()
            .output,
        "ok\n"
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn killing_a_server_under_load_hangs_nobody_and_the_pool_recovers() {
    let Some((pool, scheduler, client, _base)) = pool(2, 4).await else {
        return;
    };
    let (leased, mut first_lease) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let client = client.clone();
        let leased = leased.clone();
        tasks.spawn(async move {
            let lease = client
                .lease(&CreateLease {
                    wait_s: Some(60.0),
                    ..CreateLease::default()
                })
                .await?;
            let _ = leased.send(
                lease
                    .slot_id
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
            for _ in 0..10 {
                client.exec(&lease.lease_id, &command("sleep 0.05")).await?;
            }
            client.release(&lease.lease_id).await?;
            Ok::<(), slotbox_client::Error>(())
        });
    }
    // Kill the server of the first lease granted: a client is working on it right now.
    let victim = first_lease.recv().await.unwrap();
    let pid = scheduler.server_pid(&victim).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let all_done = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut outcomes = Vec::new();
        while let Some(done) = tasks.join_next().await {
            outcomes.push(done.unwrap());
        }
        outcomes
    })
    .await
    .expect("a client hung after its server was killed");
    for outcome in &outcomes_codes(&all_done) {
        // Every failure is the documented one: the slot was lost with its server.
        assert_eq!(outcome.as_ref(), Some(&ErrorCode::SlotLost), "{all_done:?}");
    }
    assert!(
        all_done.iter().any(Result::is_ok),
        "the surviving server served no one"
    );
    pool.replace_lost(2).await;
    assert_eq!(pool.capacity(), (2, 8, 8));
    pool.shutdown().await;
}

/// The error codes of the failed outcomes.
fn outcomes_codes(outcomes: &[Result<(), slotbox_client::Error>]) -> Vec<Option<ErrorCode>> {
    outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().err())
        .map(|error| error.code().cloned())
        .collect()
}

/// Polls `condition` until it holds or `within` passes (then fails with `what`).
async fn eventually(within: std::time::Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sustained_waiting_scales_up_to_max_and_idle_servers_are_retired_down_to_min() {
    let Some((pool, _scheduler, client, _base)) = pool(1, 1).await else {
        return;
    };
    let policy = slotbox_pool::Autoscale {
        min: 1,
        max: 3,
        slots_per_server: 1,
        up_after: std::time::Duration::from_millis(200),
        idle_after: std::time::Duration::from_millis(300),
        cooldown: std::time::Duration::from_millis(50),
        max_starting: 2,
        period: std::time::Duration::from_millis(50),
    };
    let autoscaler = tokio::spawn(slotbox_pool::run_autoscaler(Arc::clone(&pool), policy));
    let held = client
        .lease(&CreateLease {
            wait_s: Some(1.0),
            ..CreateLease::default()
        })
        .await
        .unwrap();
    // Three clients wait for the one busy slot: the pool grows to its max of three servers
    // (not four), and two of them get slots on the new servers.
    let mut waiting = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let client = client.clone();
        waiting.spawn(async move {
            client
                .lease(&CreateLease {
                    wait_s: Some(60.0),
                    ..CreateLease::default()
                })
                .await
        });
    }
    let mut granted = Vec::new();
    for _ in 0..2 {
        granted.push(waiting.join_next().await.unwrap().unwrap().unwrap());
    }
    assert_eq!(pool.capacity().0, 3);
    assert!(pool.observe().starting == 0 && pool.capacity().0 <= 3);
    // The third waiter gets the first slot given back.
    client.release(&held.lease_id).await.unwrap();
    granted.push(waiting.join_next().await.unwrap().unwrap().unwrap());
    for lease in &granted {
        client.release(&lease.lease_id).await.unwrap();
    }
    // Idle servers are retired, one step at a time, down to min.
    eventually(
        std::time::Duration::from_secs(20),
        "scale down to 1",
        || pool.capacity() == (1, 1, 1),
    )
    .await;
    // And the one left still serves.
    let lease = client
        .lease(&CreateLease {
            wait_s: Some(5.0),
            ..CreateLease::default()
        })
        .await
        .unwrap();
    assert_eq!(
        client
            .exec(&lease.lease_id, &command("echo ok"))
            .await
            .unwrap()
            .output,
        "ok\n"
    );
    autoscaler.abort();
    pool.shutdown().await;
}

#[tokio::test]
async fn metrics_show_the_fleet_and_what_happened() {
    let Some((pool, _scheduler, client, base)) = pool(2, 2).await else {
        return;
    };
    let lease = client.lease(&CreateLease::default()).await.unwrap();
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "slotbox_pool_servers 2",
        "slotbox_pool_slots 4",
        "slotbox_pool_slots_free 3",
        "slotbox_pool_leases 1",
        "slotbox_pool_leases_granted_total 1",
        "slotbox_pool_servers_started_total 2",
        "slotbox_pool_servers_lost_total 0",
        "slotbox_pool_scheduler_info{scheduler=\"local\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    client.release(&lease.lease_id).await.unwrap();
    pool.shutdown().await;
}

/// A local scheduler whose starts, once their server runs, wait for the test's go-ahead: the
/// window between "a server exists" and "the pool has it" made as wide as a test needs.
#[derive(Debug)]
struct Gated {
    inner: LocalScheduler,
    started: tokio::sync::Notify,
    go: tokio::sync::Semaphore,
}

impl slotbox_pool::Scheduler for Gated {
    fn name(&self) -> &'static str {
        "gated"
    }

    fn start_server(
        &self,
    ) -> slotbox_pool::SchedulerFuture<'_, slotbox_pool::Result<slotbox_pool::ServerHandle>> {
        Box::pin(async move {
            let handle = self.inner.start_server().await?;
            self.started.notify_one();
            self.go.acquire().await.unwrap().forget();
            Ok(handle)
        })
    }

    fn stop_server<'a>(
        &'a self,
        id: &'a str,
    ) -> slotbox_pool::SchedulerFuture<'a, slotbox_pool::Result<()>> {
        self.inner.stop_server(id)
    }

    fn is_alive<'a>(&'a self, id: &'a str) -> slotbox_pool::SchedulerFuture<'a, bool> {
        self.inner.is_alive(id)
    }
}

#[tokio::test]
async fn a_server_still_starting_when_shutdown_begins_is_stopped_too() {
    let binary = match slotbox_test_support::workspace_binary("slotbox") {
        Ok(binary) => binary,
        Err(reason) => {
            slotbox_test_support::require("the slotbox binary", Err(reason));
            return;
        }
    };
    let scheduler = Arc::new(Gated {
        inner: LocalScheduler::new(LocalConfig {
            binary,
            slots_per_server: 1,
            serve_args: Vec::new(),
        })
        .unwrap(),
        started: tokio::sync::Notify::new(),
        go: tokio::sync::Semaphore::new(0),
    });
    let needle = scheduler.inner.data_root().display().to_string();
    let pool = Pool::new(scheduler.clone(), None);
    let adding = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.add_server().await })
    };
    // The server runs, but the pool does not have it yet.
    scheduler.started.notified().await;
    assert!(slotbox_test_support::process_alive(&needle));
    let shutdown = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.shutdown().await })
    };
    // The shutdown has begun (it waits for the start); now the start may finish.
    eventually(std::time::Duration::from_secs(10), "shutdown began", || {
        pool.is_shutting_down()
    })
    .await;
    scheduler.go.add_permits(1);
    shutdown.await.unwrap();
    let added = adding.await.unwrap();
    assert!(
        added.is_err(),
        "a server was added after shutdown: {added:?}"
    );
    assert_eq!(pool.capacity().0, 0);
    assert!(
        !slotbox_test_support::process_alive(&needle),
        "a server outlived the shutdown"
    );
}
