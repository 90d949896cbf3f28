//! The nomad scheduler: sandbox servers as the allocations of one Nomad service job, driven
//! through Nomad's HTTP API (<https://developer.hashicorp.com/nomad/api-docs>).
//!
//! One job (`slotbox` by default) with one task group whose task runs `slotbox serve` on a
//! dynamic port labelled `http`. A server is an allocation; the group's count is the number of
//! servers the pool asked for. Each server has the pool's random token (in the task's `Env` as
//! `SLOTBOX_TOKEN`, since it listens beyond loopback), and isolates its slots with bubblewrap
//! inside the task exactly as on any host (isolation fails closed there too).
//!
//! How the scheduler's duties map onto Nomad:
//! - `prepare` registers the job with the `{"Job": …}` envelope Nomad requires (the seed sent the
//!   bare job, which Nomad refuses with 400, and took the refusal for success). Registration is
//!   idempotent: when the job exists, the spec keeps its current count and the token read back
//!   from it, so re-registering after a crashed pool is "no change" to Nomad and every
//!   allocation keeps running. The allocations still running are then *adopted* by the next
//!   `start_server` calls before any scale-up: a pool restart loses no allocation.
//! - `start_server` hands out a running allocation nobody holds (a replacement Nomad placed after
//!   a loss, or one left by an earlier pool); else waits for a placement already coming (the count
//!   is above the allocations handed out); else scales the count up by one. It waits with
//!   blocking queries on the job's allocations (`?index=N&wait=…`), never by polling Nomad, and
//!   a server is ready when its allocation runs *and* its `/v1/health` answers.
//! - `stop_server` is for a dead or broken server: the allocation is stopped if it still runs;
//!   Nomad reschedules it (same name index, new id, same count) and a later `start_server` hands
//!   the replacement out.
//! - `retire_server` scales the count down; Nomad's reconciler then stops the allocation with the
//!   highest name index, so only that one can be retired (`pick_retiree`); spare allocations
//!   above it (running, but no server of this pool, e.g. left by a larger earlier pool) stop
//!   with it.
//! - `shutdown` deregisters the job (purged) and waits until every allocation stopped.
//!
//! Scaling while a deployment is active is refused by Nomad with 400; it is retried with backoff
//! until the start's deadline. The job itself disables deployments (`max_parallel = 0`), so this
//! only happens to a job someone else registered with an update strategy.

use std::collections::HashMap;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use serde_json::json;
use tokio::time::Instant;

use crate::Error;
use crate::Result;
use crate::scheduler::Scheduler;
use crate::scheduler::SchedulerFuture;
use crate::scheduler::ServerHandle;

/// The task's name in the group.
const TASK: &str = "slotbox-serve";
/// The label of the dynamic port the server listens on.
const PORT_LABEL: &str = "http";
/// Longest wait of one blocking query. Nomad allows 10 minutes; a shorter wait bounds how long a
/// Nomad that went away goes unnoticed and keeps each HTTP request short.
const BLOCKING_WAIT: Duration = Duration::from_secs(30);
/// Deadline of a plain Nomad call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// First pause before a scale refused during a deployment is retried (doubling each time).
const SCALE_RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest pause between two scale attempts.
const SCALE_RETRY_MAX: Duration = Duration::from_secs(5);
/// The server's grace after SIGTERM to kill its slots' commands (the task's `kill_timeout`).
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long retiring a server or shutting down waits for allocations to stop: the kill timeout
/// plus the time Nomad's scheduler and client take to act.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// First pause between health checks of a server that does not answer yet (doubling).
const HEALTH_RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest pause between health checks; from then on each retry also asks Nomad whether the
/// allocation still runs (once a second at most, not a tight poll).
const HEALTH_RETRY_MAX: Duration = Duration::from_secs(1);

/// How the task runs `slotbox serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NomadDriver {
    /// Nomad's `raw_exec` driver: the `slotbox` binary at this path on every client node (the
    /// plugin must be enabled). The server runs as the Nomad agent's user with no container;
    /// each slot is still confined by its own bubblewrap sandbox.
    RawExec {
        /// Path of the `slotbox` binary on the client nodes.
        binary: PathBuf,
    },
    /// Nomad's `docker` driver: the sandbox-server image (`scripts/build-image.sh`), whose entry
    /// point runs `slotbox`. Needs `allow_privileged = true` in the client's docker plugin
    /// configuration (see `NomadConfig::job_spec` for why).
    Docker {
        /// The image, e.g. `slotbox-sandbox:latest`.
        image: String,
    },
}

/// Where the Nomad cluster is and what job to run on it. Fields are public so a command line or
/// a configuration file can fill them; `NomadConfig::new` sets the defaults. Its `Debug` output
/// leaves the two tokens out.
#[derive(Clone, PartialEq, Eq)]
pub struct NomadConfig {
    /// Nomad's HTTP API, e.g. `http://127.0.0.1:4646` (plain HTTP: this build has no TLS client).
    pub address: String,
    /// ACL token sent as `X-Nomad-Token` (needs submit-job, read-job, scale-job and
    /// alloc-lifecycle on the namespace).
    pub token: Option<String>,
    /// The namespace of the job (Nomad's default when `None`).
    pub namespace: Option<String>,
    /// The region to forward requests to (the agent's own when `None`).
    pub region: Option<String>,
    /// The job's ID and name.
    pub job_id: String,
    /// The task group's name.
    pub group: String,
    /// Datacenters the job may run in (`*`: any, Nomad 1.5 and later).
    pub datacenters: Vec<String>,
    /// How the task runs the server.
    pub driver: NomadDriver,
    /// Slots per server (`slotbox serve --slots`).
    pub slots_per_server: usize,
    /// Extra arguments for `slotbox serve` (isolation, limits); Nomad interpolates `${…}` in them.
    pub serve_args: Vec<String>,
    /// CPU Nomad reserves per server, in MHz.
    pub cpu_mhz: u32,
    /// Memory Nomad reserves per server, in MiB (the docker driver also enforces it).
    pub memory_mb: u32,
    /// The servers' bearer token. `None`: the token of the registered job if it exists (so a
    /// restarted pool re-registers an identical job), else a random one.
    pub server_token: Option<String>,
    /// How long `start_server` may take: placement, scale retries and readiness.
    pub start_timeout: Duration,
}

impl std::fmt::Debug for NomadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens end up in logs through `{:?}` otherwise.
        let hidden = |token: &Option<String>| token.as_ref().map(|_| "<hidden>");
        f.debug_struct("NomadConfig")
            .field("address", &self.address)
            .field("token", &hidden(&self.token))
            .field("namespace", &self.namespace)
            .field("region", &self.region)
            .field("job_id", &self.job_id)
            .field("group", &self.group)
            .field("datacenters", &self.datacenters)
            .field("driver", &self.driver)
            .field("slots_per_server", &self.slots_per_server)
            .field("serve_args", &self.serve_args)
            .field("cpu_mhz", &self.cpu_mhz)
            .field("memory_mb", &self.memory_mb)
            .field("server_token", &hidden(&self.server_token))
            .field("start_timeout", &self.start_timeout)
            .finish()
    }
}

impl NomadConfig {
    /// A configuration with the defaults: job `slotbox`, group `sandbox`, any datacenter,
    /// 1000 MHz and 2048 MiB per server, a random server token, 120 s to start a server.
    pub fn new(address: impl Into<String>, driver: NomadDriver, slots_per_server: usize) -> Self {
        Self {
            address: address.into(),
            token: None,
            namespace: None,
            region: None,
            job_id: "slotbox".to_owned(),
            group: "sandbox".to_owned(),
            datacenters: vec!["*".to_owned()],
            driver,
            slots_per_server,
            serve_args: Vec::new(),
            cpu_mhz: 1000,
            memory_mb: 2048,
            server_token: None,
            start_timeout: Duration::from_secs(120),
        }
    }

    /// The job this configuration registers, with `count` servers whose bearer token is
    /// `server_token` (Nomad's JSON job format, as sent inside the `{"Job": …}` envelope).
    /// Pure: the same inputs give the same job, which is what makes re-registering it a no-op.
    pub fn job_spec(&self, count: usize, server_token: &str) -> Value {
        let mut args: Vec<String> = [
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "${NOMAD_PORT_http}",
            "--slots",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        args.push(self.slots_per_server.to_string());
        args.extend(self.serve_args.iter().cloned());
        let (driver, config) = match &self.driver {
            NomadDriver::RawExec { binary } => (
                "raw_exec",
                json!({"command": binary.to_string_lossy(), "args": args}),
            ),
            // bubblewrap nested in a container needs what Docker withholds by default:
            // CAP_SYS_ADMIN (namespaces, mounts), unconfined seccomp and AppArmor (unshare and
            // mount are filtered), and an unmasked /proc (the kernel refuses bwrap's fresh procfs
            // while parts of /proc are masked: docker's `--security-opt systempaths=unconfined`).
            // That last one is a docker CLI option the daemon API does not accept in
            // `security_opt`, and Nomad's driver has no masked-paths setting, so `privileged` is
            // the only way to grant all of it through Nomad. The container is packaging and a
            // resource envelope; a slot's security boundary is its bubblewrap sandbox.
            NomadDriver::Docker { image } => (
                "docker",
                json!({
                    "image": image,
                    "ports": [PORT_LABEL],
                    "args": args,
                    "privileged": true,
                    // Reaps the orphans of slot commands (the server is not pid 1).
                    "init": true,
                }),
            ),
        };
        let mut job = json!({
            "ID": self.job_id,
            "Name": self.job_id,
            "Type": "service",
            "Datacenters": self.datacenters,
            "TaskGroups": [{
                "Name": self.group,
                "Count": count,
                // Host networking with one dynamic port: two servers on one node never collide
                // (the seed's fixed port did).
                "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": PORT_LABEL}]}],
                // A server that exits fails its allocation at once instead of restarting in
                // place: its slots' state is gone either way, the pool has already taken it out,
                // and the replacement Nomad schedules gets a new id the pool can adopt.
                "RestartPolicy": {
                    "Attempts": 0,
                    "Interval": nanos(Duration::from_secs(1800)),
                    "Delay": nanos(Duration::from_secs(15)),
                    "Mode": "fail",
                },
                "ReschedulePolicy": {
                    "Unlimited": true,
                    "Delay": nanos(Duration::from_secs(5)),
                    "DelayFunction": "exponential",
                    "MaxDelay": nanos(Duration::from_secs(300)),
                },
                // No deployments: Nomad refuses to scale a job while one is active, and the pool
                // checks readiness itself.
                "Update": {"MaxParallel": 0},
                "Tasks": [{
                    "Name": TASK,
                    "Driver": driver,
                    "Config": config,
                    // In the environment, not on the command line, which `ps` shows.
                    "Env": {"SLOTBOX_TOKEN": server_token},
                    "Resources": {"CPU": self.cpu_mhz, "MemoryMB": self.memory_mb},
                    // On SIGTERM the server kills its slots' commands, then exits (Nomad's
                    // default for raw_exec would be SIGINT, which it treats the same).
                    "KillSignal": "SIGTERM",
                    "KillTimeout": nanos(KILL_TIMEOUT),
                }],
            }],
        });
        if let Some(namespace) = &self.namespace {
            job["Namespace"] = json!(namespace);
        }
        if let Some(region) = &self.region {
            job["Region"] = json!(region);
        }
        job
    }
}

/// A duration as Nomad's JSON API writes it: nanoseconds.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Sandbox servers as allocations of a Nomad job.
#[derive(Debug)]
pub struct NomadScheduler {
    config: NomadConfig,
    api: Api,
    state: Mutex<State>,
    /// Serialises registration and every decision that changes the count: two starts deciding at
    /// once would both see no placement coming and scale to the same count.
    scaling: tokio::sync::Mutex<()>,
}

/// What the scheduler knows beyond Nomad's answers.
#[derive(Debug, Default)]
struct State {
    /// The servers' token, once the job is registered.
    server_token: Option<Secret>,
    /// Allocations handed out to the pool, by id, with their name index.
    handed_out: HashMap<String, u64>,
    /// Allocations a start is checking before handing them out.
    claimed: HashSet<String>,
    /// Starts waiting for a placement that is already coming.
    pending: usize,
}

impl NomadScheduler {
    /// A scheduler for `config`; nothing is asked of Nomad until `prepare`.
    pub fn new(config: NomadConfig) -> Result<Self> {
        let address = config.address.trim_end_matches('/').to_owned();
        if !address.starts_with("http://") {
            return Err(Error::Scheduler(format!(
                "nomad address {address:?} must start with http:// (this build has no TLS client; reach an https agent through a local proxy)"
            )));
        }
        if config.slots_per_server == 0 {
            return Err(Error::Scheduler(
                "nomad: slots per server must be at least 1".to_owned(),
            ));
        }
        if config.job_id.is_empty() || config.group.is_empty() {
            return Err(Error::Scheduler(
                "nomad: the job id and the group name must not be empty".to_owned(),
            ));
        }
        if let NomadDriver::RawExec { binary } = &config.driver
            && binary.to_str().is_none()
        {
            return Err(Error::Scheduler(format!(
                "nomad: the slotbox binary path {} is not UTF-8, which a Nomad job cannot hold",
                binary.display()
            )));
        }
        let http = reqwest::Client::builder().build().map_err(|error| {
            Error::Scheduler(format!("nomad: building the HTTP client: {error}"))
        })?;
        let mut params = Vec::new();
        if let Some(namespace) = &config.namespace {
            params.push(("namespace", namespace.clone()));
        }
        if let Some(region) = &config.region {
            params.push(("region", region.clone()));
        }
        let api = Api {
            http,
            address,
            token: config.token.clone().map(Secret),
            params,
        };
        Ok(Self {
            config,
            api,
            state: Mutex::new(State::default()),
            scaling: tokio::sync::Mutex::new(()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NomadConfig {
        &self.config
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn job_path(&self) -> String {
        format!("/v1/job/{}", self.config.job_id)
    }

    /// Turns a failed call into the scheduler's error, saying what to do where that is known.
    fn failure(&self, what: &str, error: CallError) -> Error {
        match error {
            CallError::Unreachable(detail) => Error::Scheduler(format!(
                "cannot reach Nomad at {} to {what}: {detail}; check the address and that the agent runs",
                self.api.address
            )),
            CallError::Status { status: 403, body } => Error::Scheduler(format!(
                "Nomad refused to {what} ({body}): the ACL token needs submit-job, read-job, scale-job and alloc-lifecycle on namespace {} (docs/nomad.md)",
                self.config.namespace.as_deref().unwrap_or("default")
            )),
            CallError::Status { status, body } => {
                Error::Scheduler(format!("Nomad answered {status} to {what}: {body}"))
            }
            CallError::Invalid(detail) => {
                Error::Scheduler(format!("unexpected answer from Nomad to {what}: {detail}"))
            }
        }
    }

    /// The registered job, if any.
    async fn read_job(&self) -> Result<Option<Value>> {
        let what = format!("read job {}", self.config.job_id);
        self.get_optional(&self.job_path(), &what).await
    }

    /// `GET path`'s body, or `None` when Nomad answers 404.
    async fn get_optional(&self, path: &str, what: &str) -> Result<Option<Value>> {
        match self
            .api
            .call(reqwest::Method::GET, path, &[], None, CALL_TIMEOUT)
            .await
        {
            Ok(answer) => Ok(Some(answer.body)),
            Err(CallError::Status { status: 404, .. }) => Ok(None),
            Err(error) => Err(self.failure(what, error)),
        }
    }

    /// Registers the job (keeping an existing job's count and token) and returns the token.
    /// Callers hold `scaling`.
    async fn register(&self) -> Result<String> {
        let existing = self.read_job().await?;
        let (count, existing_token) = match &existing {
            Some(job) => (
                group_count(job, &self.config.group).unwrap_or(0),
                job_token(job, &self.config.group),
            ),
            None => (0, None),
        };
        let token = self
            .config
            .server_token
            .clone()
            .or(existing_token)
            .unwrap_or_else(random_token);
        let body = json!({"Job": self.config.job_spec(count, &token)});
        let what = format!("register job {}", self.config.job_id);
        let answer = match self
            .api
            .call(
                reqwest::Method::POST,
                "/v1/jobs",
                &[],
                Some(&body),
                CALL_TIMEOUT,
            )
            .await
        {
            Ok(answer) => answer,
            Err(CallError::Status { status: 400, body }) => {
                return Err(Error::Scheduler(format!(
                    "Nomad rejected job {} as invalid: {body}",
                    self.config.job_id
                )));
            }
            Err(error) => return Err(self.failure(&what, error)),
        };
        if let Some(warnings) = answer.body.get("Warnings").and_then(Value::as_str)
            && !warnings.is_empty()
        {
            tracing::warn!(job = %self.config.job_id, warnings, "nomad warned about the job");
        }
        tracing::info!(
            job = %self.config.job_id,
            count,
            existing = existing.is_some(),
            "nomad job registered"
        );
        self.state().server_token = Some(Secret(token.clone()));
        Ok(token)
    }

    /// The servers' token, registering the job first if `prepare` was not called.
    async fn server_token(&self) -> Result<String> {
        let known = self.state().server_token.clone();
        if let Some(Secret(token)) = known {
            return Ok(token);
        }
        let _scaling = self.scaling.lock().await;
        let known = self.state().server_token.clone();
        match known {
            Some(Secret(token)) => Ok(token),
            None => self.register().await,
        }
    }

    /// The group's count.
    async fn job_count(&self) -> Result<usize> {
        match self.read_job().await? {
            Some(job) => group_count(&job, &self.config.group).ok_or_else(|| {
                Error::Scheduler(format!(
                    "Nomad job {} has no task group {}; was it registered by something else?",
                    self.config.job_id, self.config.group
                ))
            }),
            None => Err(Error::Scheduler(format!(
                "Nomad job {} is gone (deregistered outside the pool?); restart the pool to register it again",
                self.config.job_id
            ))),
        }
    }

    /// Sets the group's count, retrying while Nomad refuses because a deployment is active.
    async fn scale(&self, count: usize, message: &str, deadline: Instant) -> Result<()> {
        let body = json!({
            "Count": count,
            "Target": {"Group": self.config.group},
            "Message": message,
        });
        let path = format!("{}/scale", self.job_path());
        let what = format!("scale job {} to {count}", self.config.job_id);
        let mut pause = SCALE_RETRY_FIRST;
        loop {
            match self
                .api
                .call(reqwest::Method::POST, &path, &[], Some(&body), CALL_TIMEOUT)
                .await
            {
                Ok(_) => {
                    tracing::info!(job = %self.config.job_id, count, message, "nomad job scaled");
                    return Ok(());
                }
                // "job scaling blocked due to active deployment": retry once it ends.
                Err(CallError::Status { status: 400, body }) if body.contains("deployment") => {
                    if Instant::now() + pause > deadline {
                        return Err(Error::Scheduler(format!(
                            "could not {what}: Nomad kept refusing while a deployment is active ({body}); let the deployment finish or fail it (`nomad deployment fail`)"
                        )));
                    }
                    tracing::info!(job = %self.config.job_id, count, ?pause, "a deployment is active; retrying the scale");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(SCALE_RETRY_MAX);
                }
                Err(error) => return Err(self.failure(&what, error)),
            }
        }
    }

    /// The group's allocations and the index of that answer. With `after`, a blocking query:
    /// Nomad answers once its index passes `after`, or when the wait (bounded by `deadline`)
    /// ends.
    async fn allocations(
        &self,
        after: Option<u64>,
        deadline: Instant,
    ) -> Result<(Vec<AllocStub>, u64)> {
        let mut query = Vec::new();
        let mut timeout = CALL_TIMEOUT;
        if let Some(index) = after {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(BLOCKING_WAIT);
            if index == 0 {
                // Nomad sent no index to block on; pause rather than ask again at once.
                tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
            } else if !wait.is_zero() {
                query.push(("index", index.to_string()));
                query.push(("wait", format!("{}ms", wait.as_millis().max(1))));
                // Nomad adds up to wait/16 of jitter to a blocking query.
                timeout = wait + wait / 16 + CALL_TIMEOUT;
            }
        }
        let path = format!("{}/allocations", self.job_path());
        let answer = self
            .api
            .call(reqwest::Method::GET, &path, &query, None, timeout)
            .await
            .map_err(|error| {
                self.failure(
                    &format!("list the allocations of job {}", self.config.job_id),
                    error,
                )
            })?;
        let stubs: Vec<AllocStub> = serde_json::from_value(answer.body).map_err(|error| {
            Error::Scheduler(format!(
                "unexpected allocation list from Nomad for job {}: {error}",
                self.config.job_id
            ))
        })?;
        let stubs = stubs
            .into_iter()
            .filter(|stub| stub.task_group.is_empty() || stub.task_group == self.config.group)
            .collect();
        Ok((stubs, answer.index))
    }

    /// One allocation in full, or `None` if Nomad does not know it.
    async fn allocation(&self, id: &str) -> Result<Option<Value>> {
        self.get_optional(
            &format!("/v1/allocation/{id}"),
            &format!("read allocation {id}"),
        )
        .await
    }

    /// Takes the free running allocation with the lowest name index, if any, after forgetting
    /// handed-out allocations that ended (their servers are lost to the pool already; what comes
    /// next is Nomad's replacement). A waiting start's ticket is redeemed at the same time.
    fn claim_free(
        &self,
        allocs: &[AllocStub],
        ticket: Option<&mut Ticket<'_>>,
    ) -> Option<Claim<'_>> {
        let mut state = self.state();
        state.handed_out.retain(|id, _| {
            allocs.iter().any(|alloc| {
                &alloc.id == id && alloc.desired_status == "run" && !alloc.client_terminal()
            })
        });
        let candidate = allocs
            .iter()
            .filter(|alloc| {
                alloc.running()
                    && !state.handed_out.contains_key(&alloc.id)
                    && !state.claimed.contains(&alloc.id)
            })
            .min_by_key(|alloc| alloc.index().unwrap_or(u64::MAX))?;
        state.claimed.insert(candidate.id.clone());
        if let Some(ticket) = ticket {
            ticket.redeem(&mut state);
        }
        Some(Claim {
            scheduler: self,
            id: candidate.id.clone(),
            index: candidate.index().unwrap_or(u64::MAX),
            held: true,
        })
    }

    /// Allocations the pool holds or is about to: handed out, being checked, or awaited.
    fn spoken_for(&self) -> usize {
        let state = self.state();
        state.handed_out.len() + state.claimed.len() + state.pending
    }

    async fn start(&self) -> Result<ServerHandle> {
        let deadline = Instant::now() + self.config.start_timeout;
        let token = self.server_token().await?;
        loop {
            // Decide: adopt a free allocation, or wait for one (scaling up if none is coming).
            let mut ticket = None;
            let (mut claim, mut index) = {
                let _scaling = self.scaling.lock().await;
                let (allocs, index) = self.allocations(None, deadline).await?;
                match self.claim_free(&allocs, None) {
                    Some(claim) => (Some(claim), index),
                    None => {
                        let count = self.job_count().await?;
                        let spoken_for = self.spoken_for();
                        if count <= spoken_for {
                            self.scale(
                                count.max(spoken_for) + 1,
                                "slotbox pool: one more sandbox server",
                                deadline,
                            )
                            .await?;
                        }
                        ticket = Some(Ticket::take(self));
                        (None, index)
                    }
                }
            };
            // Wait for a placement to run, with blocking queries.
            let claim = loop {
                if let Some(claim) = claim.take() {
                    break claim;
                }
                if Instant::now() >= deadline {
                    let (allocs, _) = self.allocations(None, deadline).await?;
                    return Err(Error::Scheduler(format!(
                        "no allocation of Nomad job {} was running within {:?} (allocations: {}); `nomad job status {}` and `nomad alloc status ID` say why",
                        self.config.job_id,
                        self.config.start_timeout,
                        describe(&allocs),
                        self.config.job_id
                    )));
                }
                let (allocs, next) = self.allocations(Some(index), deadline).await?;
                index = next;
                claim = self.claim_free(&allocs, ticket.as_mut());
            };
            drop(ticket);
            match self.ready(&claim.id, &token, deadline).await? {
                Some(handle) => {
                    claim.hand_out();
                    tracing::info!(allocation = %handle.id, url = %handle.base_url, "nomad allocation handed out");
                    return Ok(handle);
                }
                // It ended before its server answered; Nomad replaces it (the count holds), so
                // deciding again waits for that replacement.
                None => {
                    tracing::warn!(allocation = %claim.id, "allocation ended before its server answered");
                }
            }
        }
    }

    /// Waits until the server of a running allocation answers its health check; `None` if the
    /// allocation ends first.
    async fn ready(
        &self,
        id: &str,
        token: &str,
        deadline: Instant,
    ) -> Result<Option<ServerHandle>> {
        let Some(alloc) = self.allocation(id).await? else {
            return Ok(None);
        };
        if !is_running(&alloc) {
            return Ok(None);
        }
        let (ip, port) = http_endpoint(&alloc).ok_or_else(|| {
            Error::Scheduler(format!(
                "Nomad allocation {id} has no port labelled {PORT_LABEL}; the job's group needs a dynamic port \"{PORT_LABEL}\""
            ))
        })?;
        let base_url = base_url(&ip, port);
        let client = slotbox_client::Client::new(&base_url).with_token(token);
        let mut pause = HEALTH_RETRY_FIRST;
        loop {
            match client.health().await {
                Ok(health) => {
                    return Ok(Some(ServerHandle {
                        id: id.to_owned(),
                        base_url,
                        slots: health.slots,
                        token: Some(token.to_owned()),
                    }));
                }
                Err(error) => {
                    if Instant::now() + pause > deadline {
                        return Err(Error::Scheduler(format!(
                            "Nomad allocation {id} runs, but its server at {base_url} did not answer within {:?}: {error}",
                            self.config.start_timeout
                        )));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(HEALTH_RETRY_MAX);
                    if pause == HEALTH_RETRY_MAX && !self.alive(id).await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn forget(&self, id: &str) {
        self.state().handed_out.remove(id);
    }

    async fn stop(&self, id: &str) -> Result<()> {
        self.forget(id);
        let Some(alloc) = self.allocation(id).await? else {
            return Ok(());
        };
        if !is_live(&alloc) {
            return Ok(());
        }
        // Nomad stops it and places a replacement (same name index); the count stays.
        let path = format!("/v1/allocation/{id}/stop");
        match self
            .api
            .call(reqwest::Method::POST, &path, &[], None, CALL_TIMEOUT)
            .await
        {
            Ok(_) | Err(CallError::Status { status: 404, .. }) => {
                tracing::info!(
                    allocation = id,
                    "nomad allocation stopped; Nomad replaces it"
                );
                Ok(())
            }
            Err(error) => Err(self.failure(&format!("stop allocation {id}"), error)),
        }
    }

    /// Lowers the count so that Nomad stops `id`, and waits until it has. Nomad stops the live
    /// allocations with the highest name indexes, so every one above `id` must be a spare (running,
    /// but no server of this pool): those go too.
    async fn retire(&self, id: &str) -> Result<()> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        let (mut index, stopping) = {
            let _scaling = self.scaling.lock().await;
            let (allocs, index) = self.allocations(None, deadline).await?;
            let live: Vec<&AllocStub> = allocs.iter().filter(|alloc| alloc.live()).collect();
            let Some(target) = live.iter().find(|alloc| alloc.id == id) else {
                // Already ending: nothing left to retire.
                self.forget(id);
                return Ok(());
            };
            let target_index = target.index();
            let count = self.job_count().await?;
            let pending = self.state().pending;
            if count != live.len() || pending > 0 {
                return Err(Error::Scheduler(format!(
                    "cannot retire Nomad allocation {id} now: job {} wants {count} allocations and has {} placed, so a lower count would cancel a placement that is coming rather than stop {id}; retry once starts settle",
                    self.config.job_id,
                    live.len()
                )));
            }
            let above: Vec<&AllocStub> = live
                .iter()
                .filter(|alloc| alloc.index() > target_index)
                .copied()
                .collect();
            {
                let state = self.state();
                if let Some(busy) = above.iter().find(|alloc| {
                    state.handed_out.contains_key(&alloc.id) || state.claimed.contains(&alloc.id)
                }) {
                    return Err(Error::Scheduler(format!(
                        "cannot retire Nomad allocation {id}: a lower count makes Nomad stop {} ({}) first, which serves the pool; only the highest-numbered server can be retired",
                        busy.name, busy.id
                    )));
                }
            }
            let stopping: Vec<String> = above
                .iter()
                .map(|alloc| alloc.id.clone())
                .chain(std::iter::once(id.to_owned()))
                .collect();
            if stopping.len() > 1 {
                tracing::info!(
                    spares = stopping.len() - 1,
                    "spare allocations above the retired one stop with it"
                );
            }
            self.scale(
                count - stopping.len(),
                "slotbox pool: retire an idle sandbox server",
                deadline,
            )
            .await?;
            (index, stopping)
        };
        loop {
            let (allocs, next) = self.allocations(Some(index), deadline).await?;
            index = next;
            let still: Vec<AllocStub> = allocs
                .into_iter()
                .filter(|alloc| stopping.contains(&alloc.id) && !alloc.client_terminal())
                .collect();
            if still.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Scheduler(format!(
                    "Nomad allocations still ran {STOP_TIMEOUT:?} after the count went down: {}",
                    describe(&still)
                )));
            }
        }
        self.forget(id);
        tracing::info!(allocation = id, "nomad allocation retired");
        Ok(())
    }

    /// Whether the allocation runs; a Nomad that cannot be asked proves nothing, so it counts
    /// as running (a server that refuses connections is lost anyway).
    async fn alive(&self, id: &str) -> bool {
        match self.allocation(id).await {
            Ok(Some(alloc)) => is_running(&alloc),
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(allocation = id, %error, "cannot ask Nomad whether the allocation runs");
                true
            }
        }
    }

    async fn deregister(&self) -> Result<()> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        let what = format!("deregister job {}", self.config.job_id);
        match self
            .api
            .call(
                reqwest::Method::DELETE,
                &self.job_path(),
                &[("purge", "true".to_owned())],
                None,
                CALL_TIMEOUT,
            )
            .await
        {
            Ok(_) | Err(CallError::Status { status: 404, .. }) => {}
            Err(error) => return Err(self.failure(&what, error)),
        }
        {
            let mut state = self.state();
            state.handed_out.clear();
            state.server_token = None;
        }
        let mut index = None;
        loop {
            let (allocs, next) = self.allocations(index, deadline).await?;
            let running: Vec<AllocStub> = allocs
                .into_iter()
                .filter(|alloc| !alloc.client_terminal())
                .collect();
            if running.is_empty() {
                tracing::info!(job = %self.config.job_id, "nomad job deregistered; every allocation stopped");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Scheduler(format!(
                    "Nomad job {} is deregistered, but allocations still run after {STOP_TIMEOUT:?}: {}",
                    self.config.job_id,
                    describe(&running)
                )));
            }
            index = Some(next);
        }
    }
}

impl Scheduler for NomadScheduler {
    fn name(&self) -> &'static str {
        "nomad"
    }

    /// Registers the job. Idempotent: an existing job keeps its count and its servers' token, so
    /// the spec is identical, Nomad changes nothing, and the allocations an earlier (crashed)
    /// pool left running are adopted by the next `start_server` calls: a pool restart loses no
    /// allocation.
    fn prepare(&self) -> SchedulerFuture<'_, Result<()>> {
        Box::pin(async {
            let _scaling = self.scaling.lock().await;
            self.register().await.map(|_| ())
        })
    }

    fn start_server(&self) -> SchedulerFuture<'_, Result<ServerHandle>> {
        Box::pin(self.start())
    }

    fn stop_server<'a>(&'a self, id: &'a str) -> SchedulerFuture<'a, Result<()>> {
        Box::pin(self.stop(id))
    }

    fn retire_server<'a>(&'a self, id: &'a str) -> SchedulerFuture<'a, Result<()>> {
        Box::pin(self.retire(id))
    }

    /// Only the handed-out allocation with the highest name index can be retired (a lower count
    /// makes Nomad stop that one), and only if it is idle.
    fn pick_retiree(&self, idle: &[String]) -> Option<String> {
        let state = self.state();
        let (highest, _) = state.handed_out.iter().max_by_key(|(_, index)| **index)?;
        idle.iter().find(|id| *id == highest).cloned()
    }

    fn is_alive<'a>(&'a self, id: &'a str) -> SchedulerFuture<'a, bool> {
        Box::pin(self.alive(id))
    }

    fn shutdown_stops_servers(&self) -> bool {
        true
    }

    fn shutdown(&self) -> SchedulerFuture<'_, Result<()>> {
        Box::pin(self.deregister())
    }
}

/// A start waiting for a placement already coming, counted so that concurrent starts do not
/// all wait for the same one; given back on drop unless redeemed.
struct Ticket<'a> {
    scheduler: &'a NomadScheduler,
    held: bool,
}

impl<'a> Ticket<'a> {
    fn take(scheduler: &'a NomadScheduler) -> Self {
        scheduler.state().pending += 1;
        Self {
            scheduler,
            held: true,
        }
    }

    fn redeem(&mut self, state: &mut State) {
        if self.held {
            state.pending = state.pending.saturating_sub(1);
            self.held = false;
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.held {
            let mut state = self.scheduler.state();
            state.pending = state.pending.saturating_sub(1);
        }
    }
}

/// An allocation a start checks before handing it out (no other start takes it meanwhile);
/// released on drop unless handed out.
struct Claim<'a> {
    scheduler: &'a NomadScheduler,
    id: String,
    index: u64,
    held: bool,
}

impl Claim<'_> {
    fn hand_out(mut self) {
        let mut state = self.scheduler.state();
        state.claimed.remove(&self.id);
        state.handed_out.insert(self.id.clone(), self.index);
        self.held = false;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.held {
            self.scheduler.state().claimed.remove(&self.id);
        }
    }
}

/// An entry of `GET /v1/job/:id/allocations`.
#[derive(Debug, Clone, Deserialize)]
struct AllocStub {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "TaskGroup", default)]
    task_group: String,
    #[serde(rename = "ClientStatus", default)]
    client_status: String,
    #[serde(rename = "DesiredStatus", default)]
    desired_status: String,
}

impl AllocStub {
    /// The `N` of its name `job.group[N]`.
    fn index(&self) -> Option<u64> {
        name_index(&self.name)
    }

    fn running(&self) -> bool {
        self.client_status == "running" && self.desired_status == "run"
    }

    /// Counts towards the group's count: what a lower count chooses among.
    fn live(&self) -> bool {
        self.desired_status == "run" && matches!(self.client_status.as_str(), "pending" | "running")
    }

    /// Its task no longer runs (whatever Nomad wants of it).
    fn client_terminal(&self) -> bool {
        matches!(self.client_status.as_str(), "complete" | "failed" | "lost")
    }
}

/// `job.group[3]` → 3.
fn name_index(name: &str) -> Option<u64> {
    let (_, rest) = name.rsplit_once('[')?;
    rest.strip_suffix(']')?.parse().ok()
}

/// Allocations as a short list for error messages.
fn describe(allocs: &[AllocStub]) -> String {
    if allocs.is_empty() {
        return "none".to_owned();
    }
    allocs
        .iter()
        .map(|alloc| {
            format!(
                "{} {} {}/{}",
                alloc.name, alloc.id, alloc.client_status, alloc.desired_status
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn status_of<'a>(alloc: &'a Value, field: &str) -> &'a str {
    alloc.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// A full allocation (`GET /v1/allocation/:id`) whose task runs and is meant to.
fn is_running(alloc: &Value) -> bool {
    status_of(alloc, "ClientStatus") == "running" && status_of(alloc, "DesiredStatus") == "run"
}

/// A full allocation that is placed or running and meant to run.
fn is_live(alloc: &Value) -> bool {
    status_of(alloc, "DesiredStatus") == "run"
        && matches!(status_of(alloc, "ClientStatus"), "pending" | "running")
}

/// The address of the allocation's `http` port: `AllocatedResources.Shared.Ports` (Nomad 1.0
/// and later), else the port in a `Networks` block (group networks under
/// `AllocatedResources.Shared`, or the deprecated `Resources`).
fn http_endpoint(alloc: &Value) -> Option<(String, u16)> {
    let labelled = |port: &&Value| port.get("Label").and_then(Value::as_str) == Some(PORT_LABEL);
    let number = |port: &Value| {
        port.get("Value")
            .and_then(Value::as_u64)
            .and_then(|value| u16::try_from(value).ok())
            .filter(|value| *value > 0)
    };
    if let Some(port) = alloc
        .pointer("/AllocatedResources/Shared/Ports")
        .and_then(Value::as_array)
        .and_then(|ports| ports.iter().find(labelled))
    {
        let ip = port
            .get("HostIP")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(value) = number(port)
            && !ip.is_empty()
        {
            return Some((ip.to_owned(), value));
        }
    }
    for pointer in ["/AllocatedResources/Shared/Networks", "/Resources/Networks"] {
        let networks = alloc.pointer(pointer).and_then(Value::as_array);
        for network in networks.into_iter().flatten() {
            let ip = network
                .get("IP")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let ports = ["DynamicPorts", "ReservedPorts"]
                .iter()
                .filter_map(|kind| network.get(*kind).and_then(Value::as_array))
                .flatten();
            for port in ports {
                if labelled(&port)
                    && !ip.is_empty()
                    && let Some(value) = number(port)
                {
                    return Some((ip.to_owned(), value));
                }
            }
        }
    }
    None
}

fn base_url(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:{port}")
    } else {
        format!("http://{ip}:{port}")
    }
}

/// The group's count in a job as Nomad returns it.
fn group_count(job: &Value, group: &str) -> Option<usize> {
    find_group(job, group)?
        .get("Count")
        .and_then(Value::as_u64)
        .and_then(|count| usize::try_from(count).ok())
}

/// The `SLOTBOX_TOKEN` of the group's task in a registered job.
fn job_token(job: &Value, group: &str) -> Option<String> {
    find_group(job, group)?
        .get("Tasks")?
        .as_array()?
        .iter()
        .find(|task| task.get("Name").and_then(Value::as_str) == Some(TASK))?
        .pointer("/Env/SLOTBOX_TOKEN")?
        .as_str()
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
}

fn find_group<'a>(job: &'a Value, group: &str) -> Option<&'a Value> {
    job.get("TaskGroups")?
        .as_array()?
        .iter()
        .find(|candidate| candidate.get("Name").and_then(Value::as_str) == Some(group))
}

/// A fresh bearer token: two random UUIDs' worth of hex (244 random bits).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A token whose `Debug` output does not show it.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// A client of the few Nomad HTTP API endpoints the scheduler uses.
#[derive(Debug)]
struct Api {
    http: reqwest::Client,
    /// `http://host:port`, no trailing slash.
    address: String,
    token: Option<Secret>,
    /// `namespace` and `region`, sent with every request.
    params: Vec<(&'static str, String)>,
}

/// How a Nomad call failed.
#[derive(Debug)]
enum CallError {
    /// No answer: refused, timed out, or cut off.
    Unreachable(String),
    /// An HTTP error status; Nomad's error bodies are plain text.
    Status { status: u16, body: String },
    /// An answer that is not what the API documents.
    Invalid(String),
}

/// A successful answer.
#[derive(Debug)]
struct Answer {
    body: Value,
    /// `X-Nomad-Index`, the Raft index the answer reflects (0 if absent).
    index: u64,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let url = format!("{}{path}", self.address);
        let mut request = self
            .http
            .request(method, &url)
            .timeout(timeout)
            .query(&self.params)
            .query(query);
        if let Some(Secret(token)) = &self.token {
            request = request.header("X-Nomad-Token", token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| CallError::Unreachable(error_chain(&error)))?;
        let status = response.status();
        let index = response
            .headers()
            .get("X-Nomad-Index")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        let text = response
            .text()
            .await
            .map_err(|error| CallError::Unreachable(error_chain(&error)))?;
        if !status.is_success() {
            return Err(CallError::Status {
                status: status.as_u16(),
                body: text.trim().to_owned(),
            });
        }
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|error| CallError::Invalid(format!("{error}: {text:.200}")))?
        };
        Ok(Answer { body, index })
    }
}

/// An error with its causes (reqwest's own message hides why a connection failed).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use pretty_assertions::assert_eq;

    use super::*;

    fn raw_exec_config() -> NomadConfig {
        let mut config = NomadConfig::new(
            "http://127.0.0.1:4646",
            NomadDriver::RawExec {
                binary: PathBuf::from("/usr/local/bin/slotbox"),
            },
            4,
        );
        config.serve_args = vec!["--isolation".to_owned(), "bwrap".to_owned()];
        config
    }

    /// The whole job, compared as one value: a change to what Nomad receives shows here.
    #[test]
    fn raw_exec_job_spec() {
        let job = raw_exec_config().job_spec(2, "TOKEN");
        let expected = json!({
            "ID": "slotbox",
            "Name": "slotbox",
            "Type": "service",
            "Datacenters": ["*"],
            "TaskGroups": [{
                "Name": "sandbox",
                "Count": 2,
                "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http"}]}],
                "RestartPolicy": {
                    "Attempts": 0,
                    "Interval": 1_800_000_000_000_u64,
                    "Delay": 15_000_000_000_u64,
                    "Mode": "fail",
                },
                "ReschedulePolicy": {
                    "Unlimited": true,
                    "Delay": 5_000_000_000_u64,
                    "DelayFunction": "exponential",
                    "MaxDelay": 300_000_000_000_u64,
                },
                "Update": {"MaxParallel": 0},
                "Tasks": [{
                    "Name": "slotbox-serve",
                    "Driver": "raw_exec",
                    "Config": {
                        "command": "/usr/local/bin/slotbox",
                        "args": [
                            "serve", "--host", "0.0.0.0", "--port", "${NOMAD_PORT_http}",
                            "--slots", "4", "--isolation", "bwrap",
                        ],
                    },
                    "Env": {"SLOTBOX_TOKEN": "TOKEN"},
                    "Resources": {"CPU": 1000, "MemoryMB": 2048},
                    "KillSignal": "SIGTERM",
                    "KillTimeout": 10_000_000_000_u64,
                }],
            }],
        });
        assert_eq!(job, expected);
    }

    #[test]
    fn docker_job_spec_with_namespace_and_region() {
        let mut config = raw_exec_config();
        config.driver = NomadDriver::Docker {
            image: "slotbox-sandbox:latest".to_owned(),
        };
        config.namespace = Some("agents".to_owned());
        config.region = Some("eu".to_owned());
        config.datacenters = vec!["dc1".to_owned(), "dc2".to_owned()];
        let job = config.job_spec(0, "TOKEN");
        assert_eq!(job["Namespace"], "agents");
        assert_eq!(job["Region"], "eu");
        assert_eq!(job["Datacenters"], json!(["dc1", "dc2"]));
        assert_eq!(job["TaskGroups"][0]["Count"], 0);
        let task = &job["TaskGroups"][0]["Tasks"][0];
        assert_eq!(task["Driver"], "docker");
        assert_eq!(
            task["Config"],
            json!({
                "image": "slotbox-sandbox:latest",
                "ports": ["http"],
                "args": [
                    "serve", "--host", "0.0.0.0", "--port", "${NOMAD_PORT_http}",
                    "--slots", "4", "--isolation", "bwrap",
                ],
                "privileged": true,
                "init": true,
            })
        );
        assert_eq!(task["Env"], json!({"SLOTBOX_TOKEN": "TOKEN"}));
    }

    #[test]
    fn the_same_inputs_give_the_same_job() {
        let config = raw_exec_config();
        assert_eq!(config.job_spec(3, "T"), config.job_spec(3, "T"));
        assert_ne!(config.job_spec(3, "T"), config.job_spec(3, "U"));
    }

    #[test]
    fn count_and_token_are_read_back_from_a_registered_job() {
        let job = raw_exec_config().job_spec(5, "SECRET");
        assert_eq!(group_count(&job, "sandbox"), Some(5));
        assert_eq!(job_token(&job, "sandbox").as_deref(), Some("SECRET"));
        assert_eq!(group_count(&job, "other"), None);
        assert_eq!(job_token(&json!({"TaskGroups": []}), "sandbox"), None);
    }

    #[test]
    fn name_indexes() {
        assert_eq!(name_index("slotbox.sandbox[0]"), Some(0));
        assert_eq!(name_index("a.b[c].sandbox[12]"), Some(12));
        assert_eq!(name_index("slotbox.sandbox"), None);
        assert_eq!(name_index("slotbox.sandbox[x]"), None);
    }

    #[test]
    fn the_http_port_is_found_where_each_nomad_version_reports_it() {
        let shared_ports = json!({"AllocatedResources": {"Shared": {
            "Ports": [
                {"Label": "other", "Value": 1, "HostIP": "10.0.0.9"},
                {"Label": "http", "Value": 25_123, "To": 0, "HostIP": "10.0.0.7"},
            ],
        }}});
        assert_eq!(
            http_endpoint(&shared_ports),
            Some(("10.0.0.7".to_owned(), 25_123))
        );
        let shared_networks = json!({"AllocatedResources": {"Shared": {
            "Networks": [{"IP": "10.0.0.8", "DynamicPorts": [{"Label": "http", "Value": 20_001}]}],
        }}});
        assert_eq!(
            http_endpoint(&shared_networks),
            Some(("10.0.0.8".to_owned(), 20_001))
        );
        let deprecated = json!({"Resources": {
            "Networks": [{"IP": "fd00::1", "ReservedPorts": [{"Label": "http", "Value": 8080}]}],
        }});
        let (ip, port) = http_endpoint(&deprecated).unwrap();
        assert_eq!(base_url(&ip, port), "http://[fd00::1]:8080");
        // Pending allocations have no port yet.
        assert_eq!(http_endpoint(&json!({"ClientStatus": "pending"})), None);
    }

    #[test]
    fn tokens_stay_out_of_debug_output() {
        let mut config = raw_exec_config();
        config.token = Some("nomad-secret".to_owned());
        config.server_token = Some("server-secret".to_owned());
        let scheduler = NomadScheduler::new(config).unwrap();
        scheduler.state().server_token = Some(Secret("server-secret".to_owned()));
        let printed = format!("{scheduler:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("<hidden>"), "{printed}");
    }

    #[test]
    fn bad_configurations_are_refused_up_front() {
        let mut config = raw_exec_config();
        config.address = "https://nomad.example:4646".to_owned();
        let error = NomadScheduler::new(config).unwrap_err().to_string();
        assert!(error.contains("http://"), "{error}");
        let mut config = raw_exec_config();
        config.slots_per_server = 0;
        assert!(NomadScheduler::new(config).is_err());
    }
}
