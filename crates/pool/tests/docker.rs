//! The docker scheduler against the real Docker Engine on this machine, with the image
//! `scripts/build-image.sh` builds (`SLOTBOX_TEST_IMAGE`, default `slotbox-sandbox:test`; the
//! test script builds it from the workspace's binary before the tests run).

// Test helpers outside #[test] functions: a failed setup step should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use pretty_assertions::assert_eq;
use slotbox_client::Client;
use slotbox_client::ErrorCode;
use slotbox_pool::DockerConfig;
use slotbox_pool::DockerScheduler;
use slotbox_pool::Pool;
use slotbox_protocol::v1::CreateLease;
use slotbox_protocol::v1::ExecBody;

fn image() -> String {
    std::env::var("SLOTBOX_TEST_IMAGE").unwrap_or_else(|_| "slotbox-sandbox:test".to_owned())
}

/// A configuration with a pool name of its own, so tests running at once never reap each
/// other's containers.
fn config(slots: usize) -> DockerConfig {
    let mut config = DockerConfig::new(slots);
    config.image = image();
    config.pool_name = format!("test-{}", uuid::Uuid::new_v4().simple());
    config.serve_args = vec![
        "--memory-mb".into(),
        "512".into(),
        "--pids".into(),
        "256".into(),
    ];
    config.stop_grace = Duration::from_secs(5);
    config
}

/// Removes a test pool's containers when the test ends, even by a failed assertion, so one
/// failure does not leave containers behind for the next run.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        let pool_name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let mut config = DockerConfig::new(1);
                config.pool_name = pool_name;
                let _ = slotbox_pool::Scheduler::shutdown(&DockerScheduler::new(config)).await;
            });
        })
        .join();
    }
}

/// A scheduler whose engine and image are there (else the test skips, or fails in CI).
async fn ready_scheduler(config: DockerConfig) -> Option<Arc<DockerScheduler>> {
    let scheduler = Arc::new(DockerScheduler::new(config));
    let probe = slotbox_pool::Scheduler::prepare(&*scheduler)
        .await
        .map_err(|error| error.to_string());
    slotbox_test_support::require("the Docker Engine and the sandbox image", probe)
        .then_some(scheduler)
}

/// A pool of `servers` containers served on loopback.
async fn pool(
    servers: usize,
    slots: usize,
) -> Option<(Arc<Pool>, Arc<DockerScheduler>, Client, Sweep)> {
    let config = config(slots);
    let sweep = Sweep(config.pool_name.clone());
    let scheduler = ready_scheduler(config).await?;
    let pool = Pool::new(scheduler.clone(), None);
    let (client, _) = common::fill_and_serve(&pool, servers).await;
    Some((pool, scheduler, client, sweep))
}

fn lease_request() -> CreateLease {
    CreateLease {
        wait_s: Some(60.0),
        ..CreateLease::default()
    }
}

async fn docker() -> bollard::Docker {
    bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

#[tokio::test]
async fn containers_serve_isolated_slots_and_are_removed_at_shutdown() {
    let Some((pool, scheduler, client, _sweep)) = pool(2, 2).await else {
        return;
    };
    assert_eq!(scheduler.labelled_containers().await.unwrap().len(), 2);
    let lease = client.lease(&lease_request()).await.unwrap();
    let result = client
        .exec(
            &lease.lease_id,
            &ExecBody::new("cd /workspace && echo hi > f && cat f && pwd"),
        )
        .await
        .unwrap();
    assert_eq!(
        (result.exit_code, result.output.as_str()),
        (0, "hi\n/workspace\n")
    );
    // The session persists across calls, inside the container's sandbox.
    client
        .exec(&lease.lease_id, &ExecBody::new("export K=v; cd /tmp"))
        .await
        .unwrap();
    let result = client
        .exec(&lease.lease_id, &ExecBody::new("echo $K $PWD"))
        .await
        .unwrap();
    assert_eq!(result.output, "v /tmp\n");
    // A slot's commands have no capabilities (nothing to remount the container's system with).
    let result = client
        .exec(
            &lease.lease_id,
            &ExecBody::new("grep ^CapEff: /proc/self/status"),
        )
        .await
        .unwrap();
    assert_eq!(result.output, "CapEff:\t0000000000000000\n");
    // A slot has no network (the sandbox inside the container unshares it).
    let result = client
        .exec(&lease.lease_id, &ExecBody::new("cat /proc/net/dev | wc -l"))
        .await
        .unwrap();
    assert_eq!(result.output.trim(), "3", "only lo: {}", result.output);
    let file = client.read_file(&lease.lease_id, "f").await.unwrap();
    assert_eq!(file, b"hi\n");
    client.release(&lease.lease_id).await.unwrap();

    pool.shutdown().await;
    assert_eq!(
        scheduler.labelled_containers().await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn killing_a_container_under_load_hangs_nobody_and_the_pool_recovers() {
    let Some((pool, scheduler, client, _sweep)) = pool(2, 3).await else {
        return;
    };
    let (leased, mut first_lease) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let client = client.clone();
        let leased = leased.clone();
        tasks.spawn(async move {
            let lease = client.lease(&lease_request()).await?;
            let server = lease.slot_id.split('/').next().unwrap_or_default();
            let _ = leased.send(server.to_owned());
            for _ in 0..10 {
                client
                    .exec(&lease.lease_id, &ExecBody::new("sleep 0.05"))
                    .await?;
            }
            client.release(&lease.lease_id).await?;
            Ok::<(), slotbox_client::Error>(())
        });
    }
    // Kill the container of the first lease granted: a client is working on it right now.
    let victim = first_lease.recv().await.unwrap();
    docker()
        .await
        .kill_container(
            &victim,
            Some(bollard::query_parameters::KillContainerOptions {
                signal: "SIGKILL".to_owned(),
            }),
        )
        .await
        .unwrap();
    let outcomes = tokio::time::timeout(Duration::from_secs(120), async {
        let mut outcomes = Vec::new();
        while let Some(done) = tasks.join_next().await {
            outcomes.push(done.unwrap());
        }
        outcomes
    })
    .await
    .expect("a client hung after its container was killed");
    for outcome in &outcomes {
        if let Err(error) = outcome {
            // Every failure is the documented one: the slot was lost with its server.
            assert_eq!(error.code(), Some(&ErrorCode::SlotLost), "{outcomes:?}");
        }
    }
    assert!(
        outcomes.iter().any(Result::is_err),
        "killing a busy container failed no lease: {outcomes:?}"
    );
    assert!(
        outcomes.iter().any(Result::is_ok),
        "the surviving container served no one"
    );
    assert!(!pool.servers().iter().any(|(id, _)| *id == victim));
    pool.replace_lost(2).await;
    pool.settle().await;
    assert_eq!(pool.capacity(), (2, 6, 6));
    // The dead container was removed, not just forgotten: exactly the two live ones remain.
    let mut labelled = scheduler.labelled_containers().await.unwrap();
    labelled.sort();
    let mut live: Vec<String> = pool.servers().into_iter().map(|(id, _)| id).collect();
    live.sort();
    assert_eq!(labelled, live);
    pool.shutdown().await;
    assert_eq!(
        scheduler.labelled_containers().await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_crashed_pools_containers_are_reaped_by_the_next_pool_of_that_name() {
    let config = config(1);
    let _sweep = Sweep(config.pool_name.clone());
    let Some(crashed) = ready_scheduler(config.clone()).await else {
        return;
    };
    let pool = Pool::new(crashed.clone(), None);
    pool.add_server().await.unwrap();
    pool.add_server().await.unwrap();
    let left_behind = crashed.labelled_containers().await.unwrap();
    assert_eq!(left_behind.len(), 2);
    // The pool "crashes": it goes away without shutting anything down.
    drop(pool);
    drop(crashed);

    let successor = ready_scheduler(config).await.unwrap();
    assert_eq!(
        successor.labelled_containers().await.unwrap(),
        Vec::<String>::new()
    );
    let docker = docker().await;
    for id in left_behind {
        let inspected = docker
            .inspect_container(
                &id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await;
        assert!(inspected.is_err(), "container {id} survived the reaping");
    }
}

#[tokio::test]
async fn a_missing_image_is_a_clear_error_and_starts_nothing() {
    let Some(_probe) = ready_scheduler(config(1)).await else {
        return;
    };
    let mut config = config(1);
    config.image = "slotbox-no-such-image:never".to_owned();
    let scheduler = DockerScheduler::new(config);
    let error = slotbox_pool::Scheduler::prepare(&scheduler)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("slotbox-no-such-image:never") && error.contains("build-image.sh"),
        "{error}"
    );
    assert_eq!(
        scheduler.labelled_containers().await.unwrap(),
        Vec::<String>::new()
    );
}
