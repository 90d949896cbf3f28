//! The docker backend, checked from inside and from the engine: what a container session can
//! reach, and that nothing is left when it ends. (The session behaviours themselves run on docker
//! through `backends()`.)

use pretty_assertions::assert_eq;
use slotbox_exec::Backend;
use slotbox_exec::Error;
use slotbox_exec::Session;
use slotbox_exec::SessionConfig;

use super::docker;
use super::fixture;

async fn engine() -> bollard::Docker {
    bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// Ids of session containers whose workspace bind is `workspace`.
async fn containers_of(workspace: &std::path::Path) -> Vec<String> {
    let docker = engine().await;
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec!["io.slotbox.session".to_owned()],
    )]);
    let listed = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap();
    let needle = format!("{}:", workspace.display());
    let mut ids = Vec::new();
    for container in listed {
        let Some(id) = container.id else { continue };
        let Ok(inspected) = docker
            .inspect_container(
                &id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        else {
            continue;
        };
        let binds = inspected
            .host_config
            .and_then(|host| host.binds)
            .unwrap_or_default();
        if binds.iter().any(|bind| bind.starts_with(&needle)) {
            ids.push(id);
        }
    }
    ids
}

#[tokio::test]
async fn a_container_session_has_no_network_no_capabilities_and_its_limits() {
    let Some(backend) = docker().await else {
        return;
    };
    let mut f = fixture(&backend).await;
    let r = f.run("grep ^CapEff: /proc/self/status").await;
    assert_eq!(r.output, "CapEff:\t0000000000000000\n");
    let r = f
        .run("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
        .await;
    assert_eq!(r.output, "lo\n", "only loopback");
    let r = f
        .run("cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max")
        .await;
    assert_eq!(r.output, "1024\n");
    // The workspace is the host directory.
    let r = f.run("echo data > /workspace/f && pwd && id -u").await;
    assert_eq!(r.output, "/workspace\n0\n");
    assert_eq!(
        std::fs::read_to_string(f.workspace.path().join("f")).unwrap(),
        "data\n"
    );
}

#[tokio::test]
async fn the_container_goes_with_its_session() {
    let Some(backend) = docker().await else {
        return;
    };
    let workspace = tempfile::tempdir().unwrap();
    let session = Session::start(SessionConfig::new(backend, workspace.path()))
        .await
        .unwrap();
    assert_eq!(containers_of(workspace.path()).await.len(), 1);
    drop(session);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !containers_of(workspace.path()).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session's container outlived it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_missing_image_is_a_clear_error() {
    let Some(Backend::Docker(mut config)) = docker().await else {
        return;
    };
    config.image = "slotbox-no-such-image:never".to_owned();
    let workspace = tempfile::tempdir().unwrap();
    let error = Session::start(SessionConfig::new(
        Backend::Docker(config),
        workspace.path(),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&error, Error::ContainerUnavailable { detail } if detail.contains("slotbox-no-such-image:never")),
        "{error}"
    );
}

#[tokio::test]
async fn a_stopped_agent_fails_the_next_call_instead_of_hanging_and_nothing_is_left() {
    let Some(backend) = docker().await else {
        return;
    };
    let mut f = fixture(&backend).await;
    // The command stops the agent (its parent): its own exit is never reported, so this call
    // ends by its timeout.
    let r = f
        .exec(
            slotbox_exec::ExecRequest::new("kill -STOP $PPID; echo stopped").timeout(Some(
                slotbox_exec::Timeout::new(std::time::Duration::from_secs(1)),
            )),
        )
        .await;
    assert!(r.output.starts_with("stopped\n"), "{}", r.output);
    let started = std::time::Instant::now();
    let error = f
        .session
        .exec(&slotbox_exec::ExecRequest::new("echo never"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::SandboxGone), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    // Dropping the session kills the container at once and removes it.
    let workspace = f.workspace.path().to_owned();
    drop(f.session);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !containers_of(&workspace).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the container outlived its session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
