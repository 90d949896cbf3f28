//! The docker scheduler: sandbox servers as containers on a Docker Engine, driven through its
//! API (bollard), from the image `scripts/build-image.sh` builds locally.
//!
//! No leaks: every container carries the pool's labels; `prepare` removes what a crashed pool
//! with the same name left behind, `stop_server` stops (SIGTERM, so the server kills its slots'
//! commands) and removes, and `shutdown` sweeps anything labelled that is still there.
//!
//! Each container runs `slotbox serve` with the same bubblewrap isolation and per-slot cgroup
//! limits as a local server (isolation fails closed inside the container too). bubblewrap
//! nested in a container needs namespaces and a fresh procfs, and the per-slot cgroups need a
//! writable cgroup subtree: hence `CAP_SYS_ADMIN`, unconfined seccomp and AppArmor, unmasked
//! `/proc` paths and a private cgroup namespace (the entry point remounts the container's own
//! subtree writable). The container is packaging and a resource envelope; the security boundary
//! of a slot is its bubblewrap sandbox, as on the host (docs/docker.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::models::HostConfig;
use bollard::models::HostConfigCgroupnsModeEnum;
use bollard::models::PortBinding;
use bollard::query_parameters::CreateContainerOptions;
use bollard::query_parameters::ListContainersOptions;
use bollard::query_parameters::LogsOptions;
use bollard::query_parameters::RemoveContainerOptions;
use bollard::query_parameters::StopContainerOptions;
use futures_util::StreamExt;

use crate::Error;
use crate::Result;
use crate::scheduler::Scheduler;
use crate::scheduler::SchedulerFuture;
use crate::scheduler::ServerHandle;

/// Label on every container a slotbox pool starts.
pub const LABEL_MANAGED: &str = "io.slotbox.managed";
/// Label naming the pool that owns a container (what `prepare` reaps by).
pub const LABEL_POOL: &str = "io.slotbox.pool";
/// The port `slotbox serve` listens on inside the container.
const CONTAINER_PORT: &str = "8080/tcp";
/// What the server prints once its slots are ready.
const READY_LINE: &str = "slotbox serve: listening on ";

/// How to run servers as containers.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The sandbox-server image (`scripts/build-image.sh` builds `slotbox-sandbox:latest`).
    pub image: String,
    /// The pool's name: containers are labelled with it, and a pool reaps its own name's
    /// leftovers at start (two pools on one engine need different names).
    pub pool_name: String,
    /// Slots per server.
    pub slots_per_server: usize,
    /// Extra arguments for `slotbox serve` (limits; isolation stays on).
    pub serve_args: Vec<String>,
    /// The host address published ports bind to (loopback unless the pool runs elsewhere).
    pub publish_ip: String,
    /// Memory limit of each container in bytes (the envelope around its slots' own limits).
    pub memory_bytes: Option<i64>,
    /// Process limit of each container.
    pub pids: Option<i64>,
    /// CPU limit of each container, in billionths of a core.
    pub nano_cpus: Option<i64>,
    /// How long a container may take to serve.
    pub ready_timeout: Duration,
    /// How long a stopping server gets to end its slots' commands before it is killed.
    pub stop_grace: Duration,
}

impl DockerConfig {
    /// Defaults: image `slotbox-sandbox:latest`, pool `default`, ports on 127.0.0.1.
    pub fn new(slots_per_server: usize) -> Self {
        Self {
            image: "slotbox-sandbox:latest".to_owned(),
            pool_name: "default".to_owned(),
            slots_per_server,
            serve_args: Vec::new(),
            publish_ip: "127.0.0.1".to_owned(),
            memory_bytes: None,
            pids: None,
            nano_cpus: None,
            ready_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// Builds a server container's create body: a pure function of the configuration, the token
/// and the name, so what the engine is asked to run is reviewable and tested.
pub fn container_spec(config: &DockerConfig, token: &str) -> ContainerCreateBody {
    let mut cmd = vec![
        "serve".to_owned(),
        "--host".to_owned(),
        "0.0.0.0".to_owned(),
        "--port".to_owned(),
        "8080".to_owned(),
        "--slots".to_owned(),
        config.slots_per_server.to_string(),
        "--isolation".to_owned(),
        "bwrap".to_owned(),
    ];
    cmd.extend(config.serve_args.iter().cloned());
    let labels = HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_POOL.to_owned(), config.pool_name.clone()),
    ]);
    let port_bindings = HashMap::from([(
        CONTAINER_PORT.to_owned(),
        Some(vec![PortBinding {
            host_ip: Some(config.publish_ip.clone()),
            // Any free port; read back after the start.
            host_port: Some(String::new()),
        }]),
    )]);
    ContainerCreateBody {
        image: Some(config.image.clone()),
        cmd: Some(cmd),
        // In the environment, not the command line: `ps` on the host shows command lines.
        env: Some(vec![format!("SLOTBOX_TOKEN={token}")]),
        labels: Some(labels),
        exposed_ports: Some(HashMap::from([(CONTAINER_PORT.to_owned(), HashMap::new())])),
        host_config: Some(HostConfig {
            port_bindings: Some(port_bindings),
            // Reaps orphans of slot commands (the server is not pid 1).
            init: Some(true),
            cap_add: Some(vec!["SYS_ADMIN".to_owned()]),
            security_opt: Some(vec![
                "seccomp=unconfined".to_owned(),
                "apparmor=unconfined".to_owned(),
            ]),
            // bubblewrap mounts a fresh procfs, which the kernel refuses while parts of /proc
            // are masked (docker's `--security-opt systempaths=unconfined`).
            masked_paths: Some(Vec::new()),
            readonly_paths: Some(Vec::new()),
            cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
            memory: config.memory_bytes,
            pids_limit: config.pids,
            nano_cpus: config.nano_cpus,
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// Runs sandbox servers as containers.
#[derive(Debug)]
pub struct DockerScheduler {
    config: DockerConfig,
    docker: tokio::sync::OnceCell<Docker>,
    /// Containers this scheduler started and has not stopped: id → name.
    containers: Mutex<HashMap<String, String>>,
    next: AtomicU64,
    /// Distinguishes this pool run's container names from an earlier run's.
    run: String,
}

impl DockerScheduler {
    /// A scheduler with `config`; the engine is reached (from `DOCKER_HOST` or the local
    /// socket) on first use.
    pub fn new(config: DockerConfig) -> Self {
        Self {
            config,
            docker: tokio::sync::OnceCell::new(),
            containers: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        }
    }

    /// The engine's ids of the containers this scheduler runs.
    pub fn container_ids(&self) -> Vec<String> {
        self.containers().keys().cloned().collect()
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn docker(&self) -> Result<&Docker> {
        self.docker
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_local_defaults()
                    .map_err(|error| engine_error("connecting to the Docker Engine", &error))?;
                // The engine may speak an older API than bollard's default.
                docker
                    .negotiate_version()
                    .await
                    .map_err(|error| engine_error("reaching the Docker Engine", &error))
            })
            .await
    }

    /// Ids of every container (running or not) labelled with this pool's name.
    pub async fn labelled_containers(&self) -> Result<Vec<String>> {
        let docker = self.docker().await?;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_POOL}={}", self.config.pool_name)],
        )]);
        let containers = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..ListContainersOptions::default()
            }))
            .await
            .map_err(|error| engine_error("listing containers", &error))?;
        Ok(containers
            .into_iter()
            .filter_map(|container| container.id)
            .collect())
    }

    async fn prepare_engine(&self) -> Result<()> {
        let docker = self.docker().await?;
        docker
            .inspect_image(&self.config.image)
            .await
            .map_err(|error| match status_of(&error) {
                Some(404) => Error::Scheduler(format!(
                    "image {} not found on the Docker Engine; build it with scripts/build-image.sh",
                    self.config.image
                )),
                _ => engine_error("inspecting the image", &error),
            })?;
        let removed = self.sweep().await?;
        if removed > 0 {
            tracing::warn!(
                count = removed,
                pool = %self.config.pool_name,
                "removed containers an earlier pool of this name left behind"
            );
        }
        Ok(())
    }

    async fn start(&self) -> Result<ServerHandle> {
        let docker = self.docker().await?;
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "slotbox-{}-{}-{number}",
            sanitize(&self.config.pool_name),
            self.run
        );
        let token = uuid::Uuid::new_v4().simple().to_string();
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..CreateContainerOptions::default()
                }),
                container_spec(&self.config, &token),
            )
            .await
            .map_err(|error| engine_error("creating a server container", &error))?;
        let id = created.id;
        // Recorded before the start, so a failure below still removes it.
        self.containers().insert(id.clone(), name.clone());
        match self.run_until_ready(docker, &id).await {
            Ok(base_url) => Ok(ServerHandle {
                id,
                base_url,
                slots: self.config.slots_per_server,
                token: Some(token),
            }),
            Err(error) => {
                let _ = self.stop(&id).await;
                Err(error)
            }
        }
    }

    /// Starts the container and waits for the server's ready line (or its exit, with its last
    /// words in the error); returns its published address.
    async fn run_until_ready(&self, docker: &Docker, id: &str) -> Result<String> {
        docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|error| engine_error("starting a server container", &error))?;
        let mut logs = docker.logs(
            id,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                ..LogsOptions::default()
            }),
        );
        let mut said = String::new();
        let ready = tokio::time::timeout(self.config.ready_timeout, async {
            while let Some(chunk) = logs.next().await {
                let Ok(chunk) = chunk else { break };
                said.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                if said.lines().any(|line| line.starts_with(READY_LINE)) {
                    return true;
                }
            }
            // The log ends when the container exits.
            false
        })
        .await;
        match ready {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Scheduler(format!(
                    "server container {} exited before serving: {}",
                    short(id),
                    last_lines(&said)
                )));
            }
            Err(_) => {
                return Err(Error::Scheduler(format!(
                    "server container {} did not serve within {:?}: {}",
                    short(id),
                    self.config.ready_timeout,
                    last_lines(&said)
                )));
            }
        }
        let inspected = docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|error| engine_error("inspecting a server container", &error))?;
        let port = inspected
            .network_settings
            .and_then(|settings| settings.ports)
            .and_then(|mut ports| ports.remove(CONTAINER_PORT))
            .flatten()
            .and_then(|bindings| bindings.into_iter().find_map(|binding| binding.host_port))
            .filter(|port| !port.is_empty())
            .ok_or_else(|| {
                Error::Scheduler(format!(
                    "server container {} has no published port",
                    short(id)
                ))
            })?;
        // An IPv6 address needs brackets in a URL.
        let host = match self.config.publish_ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.config.publish_ip.clone(),
        };
        Ok(format!("http://{host}:{port}"))
    }

    async fn stop(&self, id: &str) -> Result<()> {
        self.containers().remove(id);
        self.remove(id, self.config.stop_grace).await
    }

    /// Stops (SIGTERM, then SIGKILL after `grace`) and removes a container; one that is already
    /// gone is fine.
    async fn remove(&self, id: &str, grace: Duration) -> Result<()> {
        let docker = self.docker().await?;
        if !grace.is_zero() {
            let stopped = docker
                .stop_container(
                    id,
                    Some(StopContainerOptions {
                        t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
                        signal: None,
                    }),
                )
                .await;
            match stopped {
                Ok(()) => {}
                // 304: already stopped; 404: already gone.
                Err(error) if matches!(status_of(&error), Some(304 | 404)) => {}
                Err(error) => {
                    tracing::warn!(container = short(id), %error, "stopping a container failed; removing it by force");
                }
            }
        }
        let removed = docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..RemoveContainerOptions::default()
                }),
            )
            .await;
        match removed {
            Ok(()) => Ok(()),
            // 404: gone; 409: removal already in progress (the engine finishes it).
            Err(error) if matches!(status_of(&error), Some(404 | 409)) => Ok(()),
            Err(error) => Err(engine_error("removing a server container", &error)),
        }
    }

    async fn alive(&self, id: &str) -> bool {
        let Ok(docker) = self.docker().await else {
            // The engine is out of reach: that proves nothing about the container.
            return true;
        };
        match docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(inspected) => inspected
                .state
                .and_then(|state| state.running)
                .unwrap_or(false),
            Err(error) if status_of(&error) == Some(404) => false,
            Err(error) => {
                tracing::warn!(container = short(id), %error, "could not inspect a container");
                true
            }
        }
    }

    /// Removes every container labelled with this pool's name; tries them all, then reports
    /// the failures together.
    /// Returns how many there were.
    async fn sweep(&self) -> Result<usize> {
        let mut failures = Vec::new();
        let labelled = self.labelled_containers().await?;
        for id in &labelled {
            if let Err(error) = self.remove(id, Duration::ZERO).await {
                failures.push(error.to_string());
            }
        }
        self.containers().clear();
        if failures.is_empty() {
            Ok(labelled.len())
        } else {
            Err(Error::Scheduler(failures.join("; ")))
        }
    }
}

impl Scheduler for DockerScheduler {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn prepare(&self) -> SchedulerFuture<'_, Result<()>> {
        Box::pin(self.prepare_engine())
    }

    fn start_server(&self) -> SchedulerFuture<'_, Result<ServerHandle>> {
        Box::pin(self.start())
    }

    fn stop_server<'a>(&'a self, id: &'a str) -> SchedulerFuture<'a, Result<()>> {
        Box::pin(self.stop(id))
    }

    fn is_alive<'a>(&'a self, id: &'a str) -> SchedulerFuture<'a, bool> {
        Box::pin(self.alive(id))
    }

    fn shutdown(&self) -> SchedulerFuture<'_, Result<()>> {
        Box::pin(async { self.sweep().await.map(drop) })
    }
}

fn status_of(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn engine_error(what: &str, error: &bollard::errors::Error) -> Error {
    Error::Scheduler(format!("docker: {what}: {error}"))
}

/// Container names allow `[a-zA-Z0-9_.-]`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The last few lines a failed server printed (its reason to refuse is usually there).
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(5);
    let tail = lines[start..].join(" | ");
    if tail.is_empty() {
        "(no output)".to_owned()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_spec_keeps_isolation_on_and_publishes_on_loopback() {
        let mut config = DockerConfig::new(4);
        config.serve_args = vec!["--pids".to_owned(), "256".to_owned()];
        config.memory_bytes = Some(1 << 30);
        let spec = container_spec(&config, "secret");
        let json = serde_json::to_value(&spec).unwrap();
        pretty_assertions::assert_eq!(
            json,
            serde_json::json!({
                "Image": "slotbox-sandbox:latest",
                "Cmd": ["serve", "--host", "0.0.0.0", "--port", "8080", "--slots", "4",
                        "--isolation", "bwrap", "--pids", "256"],
                "Env": ["SLOTBOX_TOKEN=secret"],
                "Labels": {"io.slotbox.managed": "true", "io.slotbox.pool": "default"},
                "ExposedPorts": {"8080/tcp": {}},
                "HostConfig": {
                    "Memory": 1073741824,
                    "Init": true,
                    "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
                    "CapAdd": ["SYS_ADMIN"],
                    "CgroupnsMode": "private",
                    "SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined"],
                    "MaskedPaths": [],
                    "ReadonlyPaths": []
                }
            })
        );
    }

    #[test]
    fn names_are_made_valid_for_the_engine() {
        assert_eq!(sanitize("team a/b"), "team-a-b");
        assert_eq!(last_lines("\n\none\ntwo\n"), "one | two");
        assert_eq!(last_lines(""), "(no output)");
    }
}
