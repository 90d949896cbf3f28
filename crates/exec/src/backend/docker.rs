//! The docker backend: one container per session, on a Docker Engine reached through its API
//! (bollard; the `docker` CLI is not used).
//!
//! The container's main process is the sandbox agent (the host's own binary, bind-mounted
//! read-only), listening on a socket in the session's state directory, which is bind-mounted
//! too. The host connects and from then on talks to it exactly as to the agent of a long-lived
//! bubblewrap sandbox: each command is a fresh bash started by the agent, with the host's own
//! pipes as its stdio (`SCM_RIGHTS` works across the container boundary: same kernel). So every
//! session rule (snapshot, cwd, 124/130, bounded output, stdin, process-group kill) is the
//! shared code's, and a call costs a fork/exec in the container, not a `docker exec` round trip.
//!
//! The engine must be local (the workspace and state directory are bind mounts of host
//! directories), and the image needs `/bin/bash` and a C library that runs the host's binary
//! (any glibc-based image as new as the host's; not musl/Alpine).
//!
//! Leaks: the container is created with `AutoRemove`; when the host end of the socket closes
//! (the session ends, or slotbox dies), the agent exits and the engine removes the container.
//! Dropping the session also removes it by force. Containers carry labels, so anything left
//! after a crash of the engine's client side can be found (`io.slotbox.session`).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::Path;
use std::path::PathBuf;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::models::HostConfig;

use crate::Error;
use crate::Result;
use crate::backend::AgentCommand;
use crate::backend::Network;
use crate::plan::utf8;

/// Where the agent binary is mounted inside the container.
pub const AGENT_INSIDE: &str = "/run/slotbox-agent/agent";
/// Where the session's state directory is mounted (the agent's socket lives there too).
pub const STATE_INSIDE: &str = "/run/slotbox";
/// The agent's socket inside the container.
const SOCKET_NAME: &str = "agent.sock";
/// Label on every session container.
pub const LABEL_SESSION: &str = "io.slotbox.session";
/// Label naming the process that owns a session container (`<boot id>:<pid>`): a container
/// whose owner is gone is an orphan, removed by the next slotbox that starts a container.
pub const LABEL_OWNER: &str = "io.slotbox.owner";

/// This process as a container owner: the boot id keeps a pid from an earlier boot from
/// being taken for a live one.
fn owner() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    format!("{}:{}", boot.trim(), std::process::id())
}

/// Whether the owner a label names is alive (same boot, pid present).
fn owner_alive(label: &str) -> bool {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    match label.rsplit_once(':') {
        Some((owner_boot, pid)) if owner_boot == boot.trim() => {
            std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        // Another boot, or unreadable: its owner is not running now.
        _ => false,
    }
}

/// Removes session containers whose owning process is gone (a slotbox killed before it could
/// remove them, e.g. with their agent stopped). Once per process.
async fn reap_orphans(docker: &Docker) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let filters = HashMap::from([("label".to_owned(), vec![LABEL_SESSION.to_owned()])]);
        let Ok(listed) = docker
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
        else {
            return;
        };
        for container in listed {
            let orphan = container
                .labels
                .as_ref()
                .and_then(|labels| labels.get(LABEL_OWNER))
                .is_some_and(|owner| !owner_alive(owner));
            if let (true, Some(id)) = (orphan, container.id) {
                tracing::warn!(container = %id, "removing an orphaned session container");
                force_remove(docker, &id).await;
            }
        }
    })
    .await;
}
/// How long a container may take until its agent answers.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How session containers are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The image; it needs `/bin/bash`.
    pub image: String,
    /// Network: off (the default: `none`) or the engine's default bridge.
    pub network: Network,
    /// Where the workspace is mounted.
    pub workspace_mount: String,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// Process limit.
    pub pids: Option<i64>,
    /// CPU limit in billionths of a core.
    pub nano_cpus: Option<i64>,
    /// The agent on the host (bind-mounted into the container).
    pub agent: AgentCommand,
}

impl DockerConfig {
    /// Defaults: network off, workspace at `/workspace`, 4 GiB, 1024 processes, 1 core.
    pub fn new(image: impl Into<String>, agent: AgentCommand) -> Self {
        Self {
            image: image.into(),
            network: Network::Off,
            workspace_mount: "/workspace".to_owned(),
            memory_bytes: Some(4 << 30),
            pids: Some(1024),
            nano_cpus: Some(1_000_000_000),
            agent,
        }
    }
}

/// The container for one session: a pure function of its inputs (snapshot-tested).
pub fn container_spec(
    config: &DockerConfig,
    workspace: &Path,
    state: &Path,
    session_id: &str,
    owner: &str,
) -> Result<ContainerCreateBody> {
    let mut cmd = vec![AGENT_INSIDE.to_owned()];
    cmd.extend(config.agent.args.iter().cloned());
    let binds = vec![
        format!("{}:{}:rw", utf8(workspace)?, config.workspace_mount),
        format!("{}:{STATE_INSIDE}:rw", utf8(state)?),
        format!("{}:{AGENT_INSIDE}:ro", utf8(&config.agent.program)?),
    ];
    Ok(ContainerCreateBody {
        image: Some(config.image.clone()),
        cmd: Some(cmd),
        // The agent's own environment; each command gets the session's from the agent.
        env: Some(vec![format!(
            "{}={STATE_INSIDE}/{SOCKET_NAME}",
            crate::agent::LISTEN_ENV
        )]),
        // The image's entry point would come between the engine and the agent.
        entrypoint: Some(Vec::new()),
        working_dir: Some(config.workspace_mount.clone()),
        labels: Some(HashMap::from([
            ("io.slotbox.managed".to_owned(), "true".to_owned()),
            (LABEL_SESSION.to_owned(), session_id.to_owned()),
            (LABEL_OWNER.to_owned(), owner.to_owned()),
        ])),
        hostname: Some("slotbox".to_owned()),
        network_disabled: Some(config.network == Network::Off),
        host_config: Some(HostConfig {
            binds: Some(binds),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                "rw,nosuid,nodev,size=1g".to_owned(),
            )])),
            network_mode: Some(
                match config.network {
                    Network::Off => "none",
                    Network::On => "bridge",
                }
                .to_owned(),
            ),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            // A reaper as pid 1 for orphans of commands.
            init: Some(true),
            auto_remove: Some(true),
            memory: config.memory_bytes,
            memory_swap: config.memory_bytes,
            pids_limit: config.pids,
            nano_cpus: config.nano_cpus,
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    })
}

/// A running session container; removed when dropped.
#[derive(Debug)]
pub(crate) struct Container {
    docker: Docker,
    id: String,
    /// The host pid of the container's init (the engine is local).
    init_pid: Option<i32>,
}

impl Drop for Container {
    fn drop(&mut self) {
        // First, synchronously: every process in the container dies now (its pid namespace
        // ends with its init), before the session removes the directories bound into it. A
        // command still running there could otherwise race that removal with symlinks, and
        // the removal runs as root. (A SIGKILLed process never runs again.)
        if let Some(pid) = self.init_pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Then the container itself (AutoRemove covers most cases; this covers the rest).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            let id = std::mem::take(&mut self.id);
            runtime.spawn(async move { force_remove(&docker, &id).await });
        }
    }
}

/// Removes a container, running or not; one that is already gone is fine.
pub async fn force_remove(docker: &Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
}

/// The engine, with the API version negotiated (the engine may be older than bollard).
async fn engine() -> Result<Docker> {
    let unavailable = |error: bollard::errors::Error| Error::ContainerUnavailable {
        detail: format!("cannot reach the Docker Engine: {error}"),
    };
    Docker::connect_with_local_defaults()
        .map_err(unavailable)?
        .negotiate_version()
        .await
        .map_err(unavailable)
}

/// Checks that the engine answers and has the image (a clear error, never a fallback); returns
/// the image's own environment (its `PATH`, `CARGO_HOME`, `JAVA_HOME`, …), which commands get as
/// defaults under the session's environment policy.
pub(crate) async fn probe(config: &DockerConfig) -> Result<Vec<(String, String)>> {
    let docker = engine().await?;
    let image =
        docker
            .inspect_image(&config.image)
            .await
            .map_err(|error| Error::ContainerUnavailable {
                detail: format!(
                    "image {} is not on the Docker Engine: {error}",
                    config.image
                ),
            })?;
    if !config.agent.program.is_file() {
        return Err(Error::ContainerUnavailable {
            detail: format!(
                "the sandbox agent {} does not exist",
                config.agent.program.display()
            ),
        });
    }
    Ok(image
        .config
        .and_then(|config| config.env)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let (name, value) = entry.split_once('=')?;
            // HOME is the workspace, as in every sandbox.
            (name != "HOME").then(|| (name.to_owned(), value.to_owned()))
        })
        .collect())
}

/// Starts the session's container and connects to its agent.
pub(crate) async fn start(
    config: &DockerConfig,
    workspace: &Path,
    state: &Path,
) -> Result<(crate::agent::Channel, Container)> {
    let docker = engine().await?;
    reap_orphans(&docker).await;
    let session_id = uuid::Uuid::new_v4().simple().to_string();
    let spec = container_spec(config, workspace, state, &session_id, &owner())?;
    let created = docker
        .create_container(
            Some(bollard::query_parameters::CreateContainerOptions {
                name: Some(format!("slotbox-session-{session_id}")),
                ..Default::default()
            }),
            spec,
        )
        .await
        .map_err(|error| Error::ContainerUnavailable {
            detail: format!("creating the session container: {error}"),
        })?;
    let mut container = Container {
        docker: docker.clone(),
        id: created.id,
        init_pid: None,
    };
    docker
        .start_container(
            &container.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(|error| Error::ContainerUnavailable {
            detail: format!("starting the session container: {error}"),
        })?;
    container.init_pid = docker
        .inspect_container(
            &container.id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .ok()
        .and_then(|inspected| inspected.state)
        .and_then(|state| state.pid)
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|pid| *pid > 0);
    let socket = state.join(SOCKET_NAME);
    let channel = connect(&docker, &container.id, &socket).await?;
    Ok((channel, container))
}

/// Connects to the agent once it listens (a readiness probe: the socket appears within
/// milliseconds of the container's start), and waits for its `ready`.
async fn connect(docker: &Docker, id: &str, socket: &Path) -> Result<crate::agent::Channel> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        match crate::agent::Channel::connect(socket) {
            Ok(channel) => {
                let ready =
                    tokio::time::timeout_at(deadline, channel.receive::<crate::agent::Reply>())
                        .await;
                return match ready {
                    Ok(Ok(Some((crate::agent::Reply::Ready, _)))) => Ok(channel),
                    _ => Err(Error::ContainerUnavailable {
                        detail: "the agent in the session container did not report ready"
                            .to_owned(),
                    }),
                };
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                // Not listening yet; unless the container already died (e.g. the image's C
                // library cannot run the agent), try again shortly.
                let state = docker
                    .inspect_container(
                        id,
                        None::<bollard::query_parameters::InspectContainerOptions>,
                    )
                    .await
                    .ok()
                    .and_then(|inspected| inspected.state);
                if let Some(state) = state
                    && state.running == Some(false)
                {
                    return Err(Error::ContainerUnavailable {
                        detail: format!(
                            "the session container exited (code {}) before its agent listened; \
                             the image needs /bin/bash and a glibc that runs the host's slotbox",
                            state.exit_code.unwrap_or(-1)
                        ),
                    });
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            Err(error) => {
                return Err(Error::ContainerUnavailable {
                    detail: format!("the session container's agent never listened: {error}"),
                });
            }
        }
    }
}

/// The plan of one command inside the container, run by its agent.
pub(crate) fn plan_inside(
    config: &DockerConfig,
    invocation: &crate::plan::ShellInvocation,
    env: &BTreeMap<String, String>,
) -> crate::plan::SpawnPlan {
    crate::plan::SpawnPlan {
        program: PathBuf::from("/bin/bash"),
        args: crate::plan::bash_args(invocation, Some(STATE_INSIDE)),
        env: env.clone(),
        cwd: PathBuf::from(&config.workspace_mount),
        group: crate::plan::ProcessGroup::New,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_container_is_locked_down() {
        let config = DockerConfig::new(
            "slotbox-sandbox:latest",
            AgentCommand {
                program: "/opt/slotbox/slotbox".into(),
                args: vec!["__sandbox-agent".to_owned()],
            },
        );
        let spec = container_spec(
            &config,
            Path::new("/srv/slots/slot_0"),
            Path::new("/dev/shm/slotbox-session-x"),
            "0123abcd",
            "boot:42",
        )
        .unwrap();
        insta::with_settings!({ sort_maps => true }, {
            insta::assert_yaml_snapshot!(spec);
        });
    }
}
