//! The nomad scheduler against a FAKE of Nomad's HTTP API (`fake_nomad`), which runs the real
//! `slotbox serve` binary as `raw_exec` tasks (bubblewrap isolation, cgroup limits), with the
//! pool on top reached through its own router on loopback.

// Test helpers outside #[test] functions: a failed setup step should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod fake_nomad;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fake_nomad::FakeNomad;
use fake_nomad::Logged;
use pretty_assertions::assert_eq;
use serde_json::Value;
use serde_json::json;
use slotbox_client::Client;
use slotbox_client::ErrorCode;
use slotbox_pool::NomadConfig;
use slotbox_pool::NomadDriver;
use slotbox_pool::NomadScheduler;
use slotbox_pool::Pool;
use slotbox_pool::Scheduler;
use slotbox_protocol::v1::CreateLease;
use slotbox_protocol::v1::ExecBody;

/// How long a condition in the fake may take to come true (a server starting, a task stopping).
const SETTLE: Duration = Duration::from_secs(30);

/// The `slotbox` binary (else the test skips, or fails in CI).
fn binary() -> Option<PathBuf> {
    match slotbox_test_support::workspace_binary("slotbox") {
        Ok(binary) => Some(binary),
        Err(reason) => {
            slotbox_test_support::require("the slotbox binary", Err(reason));
            None
        }
    }
}

/// A raw_exec configuration against `fake`: servers with `slots` slots, isolated by bubblewrap
/// with cgroup limits like every other server in the tests.
fn config(fake: &FakeNomad, binary: PathBuf, slots: usize) -> NomadConfig {
    let mut config = NomadConfig::new(fake.address(), NomadDriver::RawExec { binary }, slots);
    config.serve_args = [
        "--isolation",
        "bwrap",
        "--memory-mb",
        "512",
        "--pids",
        "256",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    config.start_timeout = Duration::from_secs(60);
    config
}

/// A pool over `scheduler`, prepared, with `servers` servers, served on loopback.
async fn pool(scheduler: Arc<NomadScheduler>, servers: usize) -> (Arc<Pool>, Client) {
    let pool = Pool::new(scheduler, None);
    pool.prepare().await.unwrap();
    let (client, _) = common::fill_and_serve(&pool, servers).await;
    (pool, client)
}

fn scale_requests(fake: &FakeNomad) -> Vec<Logged> {
    fake.requests()
        .into_iter()
        .filter(|request| request.is("POST", "/scale"))
        .collect()
}

fn server_ids(pool: &Pool) -> BTreeSet<String> {
    pool.servers().into_iter().map(|(id, _)| id).collect()
}

fn running_ids(fake: &FakeNomad, namespace: &str) -> BTreeSet<String> {
    fake.allocations(namespace, "slotbox")
        .into_iter()
        .filter(|alloc| alloc.client_status == "running")
        .map(|alloc| alloc.id)
        .collect()
}

fn server_of(slot_id: &str) -> String {
    slot_id.split('/').next().unwrap().to_owned()
}

/// Waits until `done` holds, checking /proc-backed conditions every 50 ms (processes dying are
/// not events the test can wait on); panics after 10 s.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a process is gone (a zombie until reaped counts as gone).
fn process_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.contains(") Z "))
        .unwrap_or(true)
}

#[tokio::test]
async fn a_pool_over_nomad_serves_leases_from_two_allocations() {
    let Some(binary) = binary() else {
        return;
    };
    let fake = FakeNomad::start().await;
    let mut config = config(&fake, binary, 1);
    config.namespace = Some("agents".to_owned());
    let scheduler = Arc::new(NomadScheduler::new(config).unwrap());
    let (pool, client) = pool(Arc::clone(&scheduler), 2).await;

    // Two allocations, both handed out, one slot each.
    assert_eq!(fake.job("agents", "slotbox").unwrap().count, 2);
    assert_eq!(server_ids(&pool), running_ids(&fake, "agents"));
    assert_eq!(pool.capacity(), (2, 2, 2));
    for (_, url) in pool.servers() {
        let health = Client::new(url).health().await.unwrap();
        assert_eq!(health.isolation, "bwrap");
    }

    let a = client.lease(&CreateLease::default()).await.unwrap();
    let b = client.lease(&CreateLease::default()).await.unwrap();
    assert_ne!(server_of(&a.slot_id), server_of(&b.slot_id));
    let result = client
        .exec(&a.lease_id, &ExecBody::new("echo hi; pwd"))
        .await
        .unwrap();
    assert_eq!(result.output, "hi\n/workspace\n");
    assert_eq!(result.exit_code, 0);
    client.release(&a.lease_id).await.unwrap();
    client.release(&b.lease_id).await.unwrap();
    assert_eq!(pool.capacity(), (2, 2, 2));

    let requests = fake.requests();
    // The job went in with the envelope Nomad requires, with its token for the servers.
    let registration = requests
        .iter()
        .find(|request| request.is("POST", "/v1/jobs"))
        .unwrap();
    assert_eq!(registration.status, 200);
    let body = registration.json().unwrap();
    assert_eq!(body["Job"]["ID"], "slotbox");
    assert_eq!(body["Job"]["Namespace"], "agents");
    assert_eq!(body["Job"]["TaskGroups"][0]["Count"], 0);
    let token = body["Job"]["TaskGroups"][0]["Tasks"][0]["Env"]["SLOTBOX_TOKEN"]
        .as_str()
        .unwrap();
    assert!(token.len() >= 32, "{token}");
    // One scale-up per server, each to one more.
    let counts: Vec<Value> = scale_requests(&fake)
        .iter()
        .map(|request| request.json().unwrap()["Count"].clone())
        .collect();
    assert_eq!(counts, vec![json!(1), json!(2)]);
    let scale = scale_requests(&fake)[0].json().unwrap();
    assert_eq!(scale["Target"], json!({"Group": "sandbox"}));
    // Waiting for placements used blocking queries, not polling.
    let blocking: Vec<&Logged> = requests
        .iter()
        .filter(|request| request.is("GET", "/allocations") && request.query.contains_key("index"))
        .collect();
    assert!(!blocking.is_empty(), "{requests:#?}");
    assert!(
        blocking
            .iter()
            .all(|request| request.query.contains_key("wait"))
    );
    // Every call named the namespace.
    assert!(
        requests
            .iter()
            .all(|request| request.query.get("namespace").map(String::as_str) == Some("agents")),
        "{requests:#?}"
    );
    pool.shutdown().await;
    assert_eq!(fake.job("agents", "slotbox"), None);
}

#[tokio::test]
async fn scaling_during_an_active_deployment_is_retried_until_it_ends() {
    let Some(binary) = binary() else {
        return;
    };
    let fake = Arc::new(FakeNomad::start().await);
    let scheduler = Arc::new(NomadScheduler::new(config(&fake, binary, 1)).unwrap());
    scheduler.prepare().await.unwrap();
    fake.set_deployment_active(true);
    // The deployment ends once Nomad has refused the scale at least once.
    let ends = {
        let fake = Arc::clone(&fake);
        tokio::spawn(async move {
            fake.wait_for_request(SETTLE, |request| {
                request.is("POST", "/scale") && request.status == 400
            })
            .await;
            fake.set_deployment_active(false);
        })
    };
    let handle = scheduler.start_server().await.unwrap();
    ends.await.unwrap();

    let scales = scale_requests(&fake);
    assert!(scales.len() >= 2, "{scales:#?}");
    assert_eq!(scales[0].status, 400);
    assert_eq!(scales.last().unwrap().status, 200);
    assert!(
        scales
            .iter()
            .all(|request| request.json().unwrap()["Count"] == 1)
    );
    assert_eq!(fake.job("default", "slotbox").unwrap().count, 1);
    let client = Client::new(&handle.base_url).with_token(handle.token.unwrap());
    assert_eq!(client.health().await.unwrap().slots, 1);
    scheduler.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lost_allocation_loses_its_leases_and_its_replacement_is_adopted_without_scaling() {
    let Some(binary) = binary() else {
        return;
    };
    let fake = FakeNomad::start().await;
    let scheduler = Arc::new(NomadScheduler::new(config(&fake, binary, 1)).unwrap());
    let (pool, client) = pool(Arc::clone(&scheduler), 2).await;
    let a = client.lease(&CreateLease::default()).await.unwrap();
    let b = client.lease(&CreateLease::default()).await.unwrap();
    let victim = server_of(&a.slot_id);
    let victim_index = fake
        .allocations("default", "slotbox")
        .into_iter()
        .find(|alloc| alloc.id == victim)
        .unwrap()
        .index;
    let scales_before = scale_requests(&fake).len();

    let replacement = fake.kill_alloc(&victim).await;

    // Its lease answers slot_lost, and keeps answering it; the other server is untouched.
    let error = client
        .exec(&a.lease_id, &ExecBody::new("true"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::SlotLost));
    let error = client
        .exec(&a.lease_id, &ExecBody::new("true"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::SlotLost));
    let result = client
        .exec(&b.lease_id, &ExecBody::new("echo ok"))
        .await
        .unwrap();
    assert_eq!(result.output, "ok\n");
    assert!(!scheduler.is_alive(&victim).await);
    pool.settle().await;

    // Nomad placed a replacement with the same name index; the next start hands it out.
    let placed = fake
        .allocations("default", "slotbox")
        .into_iter()
        .find(|alloc| alloc.id == replacement)
        .unwrap();
    assert_eq!(placed.index, victim_index);
    assert_eq!(placed.previous.as_deref(), Some(victim.as_str()));
    pool.replace_lost(2).await;
    assert!(
        server_ids(&pool).contains(&replacement),
        "{:?}",
        pool.servers()
    );
    assert_eq!(pool.capacity(), (2, 2, 1));
    assert_eq!(
        scale_requests(&fake).len(),
        scales_before,
        "scaled up again"
    );
    assert_eq!(fake.job("default", "slotbox").unwrap().count, 2);
    // The lost allocation was not stopped through the API again (it was already gone).
    assert!(
        !fake
            .requests()
            .iter()
            .any(|request| request.is("POST", &format!("/v1/allocation/{victim}/stop")))
    );

    // The replacement serves, with the pool's token.
    let c = client.lease(&CreateLease::default()).await.unwrap();
    assert_eq!(server_of(&c.slot_id), replacement);
    let result = client
        .exec(&c.lease_id, &ExecBody::new("echo replaced"))
        .await
        .unwrap();
    assert_eq!(result.output, "replaced\n");
    pool.shutdown().await;
}

#[tokio::test]
async fn retiring_lowers_the_count_and_stops_the_highest_numbered_allocation() {
    let Some(binary) = binary() else {
        return;
    };
    let fake = FakeNomad::start().await;
    let scheduler = NomadScheduler::new(config(&fake, binary, 1)).unwrap();
    scheduler.prepare().await.unwrap();
    let first = scheduler.start_server().await.unwrap();
    let second = scheduler.start_server().await.unwrap();
    let index_of = |id: &str| {
        fake.allocations("default", "slotbox")
            .into_iter()
            .find(|alloc| alloc.id == id)
            .unwrap()
    };
    assert_eq!(index_of(&first.id).index, 0);
    assert_eq!(index_of(&second.id).index, 1);

    // Only the highest-numbered allocation can go, and only while it is idle.
    let both = vec![first.id.clone(), second.id.clone()];
    assert_eq!(scheduler.pick_retiree(&both), Some(second.id.clone()));
    assert_eq!(
        scheduler.pick_retiree(std::slice::from_ref(&first.id)),
        None
    );
    let error = scheduler.retire_server(&first.id).await.unwrap_err();
    assert!(error.to_string().contains("highest-numbered"), "{error}");
    assert_eq!(fake.job("default", "slotbox").unwrap().count, 2);

    let pid = index_of(&second.id).pid.unwrap();
    scheduler.retire_server(&second.id).await.unwrap();
    assert_eq!(fake.job("default", "slotbox").unwrap().count, 1);
    let retired = index_of(&second.id);
    assert_eq!(
        (
            retired.client_status.as_str(),
            retired.desired_status.as_str()
        ),
        ("complete", "stop")
    );
    assert!(process_gone(pid));
    // Nothing replaced it, and the other server still runs.
    assert_eq!(
        running_ids(&fake, "default"),
        BTreeSet::from([first.id.clone()])
    );
    assert!(scheduler.is_alive(&first.id).await);
    assert!(!scheduler.is_alive(&second.id).await);
    assert_eq!(
        scheduler.pick_retiree(std::slice::from_ref(&first.id)),
        Some(first.id.clone())
    );
    scheduler.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_deregisters_the_job_and_leaves_no_process() {
    let Some(binary) = binary() else {
        return;
    };
    let fake = FakeNomad::start().await;
    let scheduler = Arc::new(NomadScheduler::new(config(&fake, binary, 1)).unwrap());
    let (pool, client) = pool(scheduler, 2).await;
    let lease = client.lease(&CreateLease::default()).await.unwrap();
    // A command left running in the slot's sandbox, tagged so it can be looked for.
    let tag = format!("slotbox-nomad-test-{}", uuid::Uuid::new_v4().simple());
    client
        .exec(
            &lease.lease_id,
            &ExecBody::new(format!(
                "(exec -a {tag} sleep 600) </dev/null >/dev/null 2>&1 &"
            )),
        )
        .await
        .unwrap();
    let pids: Vec<u32> = fake
        .allocations("default", "slotbox")
        .into_iter()
        .filter_map(|alloc| alloc.pid)
        .collect();
    assert_eq!(pids.len(), 2);

    pool.shutdown().await;

    assert_eq!(fake.job("default", "slotbox"), None);
    let delete = fake
        .requests()
        .into_iter()
        .find(|request| request.is("DELETE", "/v1/job/slotbox"))
        .unwrap();
    assert_eq!(delete.query.get("purge").map(String::as_str), Some("true"));
    // Every allocation ever placed (stop_server's replacements included) has stopped.
    let allocations = fake.allocations("default", "slotbox");
    assert!(
        allocations
            .iter()
            .all(|alloc| alloc.pid.is_none() && alloc.client_status == "complete"),
        "{allocations:#?}"
    );
    assert!(pids.iter().all(|pid| process_gone(*pid)));
    // Sandboxes end with their servers (bwrap's --die-with-parent, a moment later).
    let root = fake.root().display().to_string();
    eventually("no task process left", || {
        !slotbox_test_support::process_alive(&root)
    })
    .await;
    eventually("no slot command left", || {
        !slotbox_test_support::process_alive(&tag)
    })
    .await;
}

#[tokio::test]
async fn a_restarted_pool_adopts_the_running_allocations() {
    let Some(binary) = binary() else {
        return;
    };
    let fake = FakeNomad::start().await;
    let first = Arc::new(NomadScheduler::new(config(&fake, binary.clone(), 1)).unwrap());
    let (crashed, _) = pool(Arc::clone(&first), 2).await;
    let adopted = server_ids(&crashed);
    let pids: Vec<Option<u32>> = fake
        .allocations("default", "slotbox")
        .into_iter()
        .map(|alloc| alloc.pid)
        .collect();
    let version = fake.job("default", "slotbox").unwrap().version;
    let scales_before = scale_requests(&fake).len();
    // The pool dies without a word to Nomad: its allocations keep running.
    drop(crashed);
    drop(first);

    let successor = Arc::new(NomadScheduler::new(config(&fake, binary, 1)).unwrap());
    let (pool, client) = pool(successor, 2).await;

    // Re-registering the identical job changed nothing; the servers are the same allocations.
    let registrations: Vec<Logged> = fake
        .requests()
        .into_iter()
        .filter(|request| request.is("POST", "/v1/jobs"))
        .collect();
    assert_eq!(registrations.len(), 2);
    assert_eq!(registrations[0].json(), {
        let mut first = registrations[1].json().unwrap();
        first["Job"]["TaskGroups"][0]["Count"] = json!(0);
        Some(first)
    });
    assert_eq!(fake.job("default", "slotbox").unwrap().version, version);
    assert_eq!(server_ids(&pool), adopted);
    assert_eq!(
        scale_requests(&fake).len(),
        scales_before,
        "scaled up again"
    );
    let still: Vec<Option<u32>> = fake
        .allocations("default", "slotbox")
        .into_iter()
        .map(|alloc| alloc.pid)
        .collect();
    assert_eq!(still, pids);
    // They answer the successor (the same token was kept).
    let lease = client.lease(&CreateLease::default()).await.unwrap();
    let result = client
        .exec(&lease.lease_id, &ExecBody::new("echo adopted"))
        .await
        .unwrap();
    assert_eq!(result.output, "adopted\n");
    pool.shutdown().await;
    assert_eq!(fake.job("default", "slotbox"), None);
}

#[tokio::test]
async fn concurrent_starts_each_get_their_own_allocation() {
    let Some(binary) = binary() else {
        return;
    };
    let fake = FakeNomad::start().await;
    let scheduler = NomadScheduler::new(config(&fake, binary, 1)).unwrap();
    scheduler.prepare().await.unwrap();
    let (a, b, c) = tokio::join!(
        scheduler.start_server(),
        scheduler.start_server(),
        scheduler.start_server()
    );
    let ids: BTreeSet<String> = [a.unwrap(), b.unwrap(), c.unwrap()]
        .into_iter()
        .map(|handle| handle.id)
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids, running_ids(&fake, "default"));
    // Each decision saw the others' placements coming: one more each time, no overshoot.
    let counts: Vec<Value> = scale_requests(&fake)
        .iter()
        .map(|request| request.json().unwrap()["Count"].clone())
        .collect();
    assert_eq!(counts, vec![json!(1), json!(2), json!(3)]);
    scheduler.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_smaller_successor_retires_its_server_and_the_spares_above_it() {
    let Some(binary) = binary() else {
        return;
    };
    let fake = FakeNomad::start().await;
    let first = NomadScheduler::new(config(&fake, binary.clone(), 1)).unwrap();
    first.prepare().await.unwrap();
    first.start_server().await.unwrap();
    first.start_server().await.unwrap();
    drop(first);

    // The successor needs one server: it adopts the lowest-numbered allocation; the other stays
    // a spare, which only a later start would use.
    let successor = NomadScheduler::new(config(&fake, binary, 1)).unwrap();
    successor.prepare().await.unwrap();
    let kept = successor.start_server().await.unwrap();
    let allocations = fake.allocations("default", "slotbox");
    assert_eq!(allocations[0].id, kept.id);
    assert_eq!(allocations[0].index, 0);
    let spare = allocations[1].id.clone();

    assert_eq!(
        successor.pick_retiree(std::slice::from_ref(&kept.id)),
        Some(kept.id.clone())
    );
    successor.retire_server(&kept.id).await.unwrap();
    assert_eq!(fake.job("default", "slotbox").unwrap().count, 0);
    let stopped: Vec<(String, String)> = fake
        .allocations("default", "slotbox")
        .into_iter()
        .map(|alloc| (alloc.id, alloc.client_status))
        .collect();
    assert_eq!(
        stopped,
        vec![
            (kept.id, "complete".to_owned()),
            (spare, "complete".to_owned())
        ]
    );
    successor.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_server_that_never_runs_fails_the_start_with_a_clear_error() {
    let fake = FakeNomad::start().await;
    let mut config = config(&fake, PathBuf::from("/nonexistent/slotbox"), 1);
    config.start_timeout = Duration::from_secs(2);
    let scheduler = NomadScheduler::new(config).unwrap();
    scheduler.prepare().await.unwrap();
    let error = scheduler.start_server().await.unwrap_err().to_string();
    assert!(
        error.contains("no allocation of Nomad job slotbox was running within 2s"),
        "{error}"
    );
    assert!(
        error.contains("slotbox.sandbox[0]") && error.contains("failed"),
        "{error}"
    );
    scheduler.shutdown().await.unwrap();
}

#[tokio::test]
async fn nomad_errors_say_what_is_wrong() {
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = NomadScheduler::new(NomadConfig::new(
        address,
        NomadDriver::Docker {
            image: "slotbox-sandbox:latest".to_owned(),
        },
        1,
    ))
    .unwrap();
    let error = unreachable.prepare().await.unwrap_err().to_string();
    assert!(error.contains("cannot reach Nomad at"), "{error}");

    let fake = FakeNomad::start().await;
    fake.set_acl_token(Some("secret"));
    let driver = NomadDriver::RawExec {
        binary: PathBuf::from("/usr/local/bin/slotbox"),
    };
    let mut config = NomadConfig::new(fake.address(), driver, 1);
    let error = NomadScheduler::new(config.clone())
        .unwrap()
        .prepare()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("Permission denied") && error.contains("submit-job"),
        "{error}"
    );

    config.token = Some("secret".to_owned());
    config.memory_mb = 1;
    let error = NomadScheduler::new(config.clone())
        .unwrap()
        .prepare()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("rejected job slotbox as invalid") && error.contains("MemoryMB"),
        "{error}"
    );

    config.memory_mb = 256;
    NomadScheduler::new(config)
        .unwrap()
        .prepare()
        .await
        .unwrap();
    assert!(
        fake.requests()
            .iter()
            .filter(|request| request.status != 403)
            .all(|request| request.token.as_deref() == Some("secret"))
    );
}

/// The seed's bug, for the record: Nomad (and the fake) refuse a job without the envelope.
#[tokio::test]
async fn a_job_without_the_envelope_is_refused() {
    let fake = FakeNomad::start().await;
    let config = NomadConfig::new(
        fake.address(),
        NomadDriver::RawExec {
            binary: PathBuf::from("/usr/local/bin/slotbox"),
        },
        1,
    );
    let response = reqwest::Client::new()
        .post(format!("{}/v1/jobs", fake.address()))
        .json(&config.job_spec(1, "token"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(response.text().await.unwrap(), "Job must be specified");
    assert_eq!(fake.job("default", "slotbox"), None);
}
