//! A FAKE of Nomad's HTTP API, for the nomad scheduler's tests: an in-process axum server that
//! follows the API documentation (<https://developer.hashicorp.com/nomad/api-docs>) for the
//! endpoints slotbox uses, and really runs `raw_exec` tasks as child processes. It is not Nomad
//! and proves nothing about Nomad itself; it proves the scheduler speaks the documented API.
//!
//! Implemented, as documented:
//! - `POST /v1/jobs`: only the `{"Job": {…}}` envelope (a bare job gets 400 `Job must be
//!   specified`, as Nomad answers); a few validations (ID, one task group with a task, `MemoryMB`
//!   at least 10). Re-registering an identical job changes nothing (allocations keep running); a
//!   count-only change scales in place; any other change replaces every allocation.
//! - `GET /v1/job/:id` (404 `job not found`), `DELETE /v1/job/:id[?purge=true]`.
//! - `POST /v1/job/:id/scale` (`{"Count", "Target": {"Group"}, "Message"}`), answering 400 `job
//!   scaling blocked due to active deployment` while the deployment knob is on.
//! - `GET /v1/job/:id/allocations` and `GET /v1/allocation/:id` as blocking queries: a Raft-like
//!   modify index bumped by every write, `X-Nomad-Index` on answers, and a request with `?index=N`
//!   held until the resource's index passes N or `wait` (default 5 m, at most 10 m) elapses.
//! - `POST /v1/allocation/:id/stop`: stops the allocation and places a replacement with the same
//!   name index and a new id, as Nomad reschedules it.
//! - `X-Nomad-Token`: with a token set, any other gets 403 `Permission denied`.
//! - The reconciler, simplified: placements take the lowest free name indexes; a lower count stops
//!   the highest ones; stopping sends the task's `KillSignal` (default SIGINT), then SIGKILL to its
//!   process group after `KillTimeout` (default 5 s), then SIGKILL to whatever of its process tree
//!   is left (Nomad's executor kills the whole task), and reports the allocation `complete`. A
//!   task that exits by itself fails its allocation, replaced after the `ReschedulePolicy` delay.
//! - `raw_exec` tasks run for real: each allocation gets a free loopback port per dynamic port
//!   label, an alloc directory (`NOMAD_ALLOC_DIR`, under a temp dir), the `NOMAD_*` variables and
//!   the task's `Env`, with `${…}` interpolated in `args` and `Env`; the process runs in its own
//!   process group (stdout to the alloc's log file, stderr to the test's).
//!
//! Not implemented: evaluations and deployments (beyond the knob), nodes, placement constraints
//! and resources, drivers other than `raw_exec` (their allocations fail), task restarts, more than
//! one task group or task, jitter on blocking waits, ACL policies (one token or none), garbage
//! collection. Test knobs: `kill_alloc` (the node is lost: process killed, allocation `lost`, a
//! replacement placed at once), `set_deployment_active`, `set_acl_token`, the request log.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::Path as UrlPath;
use axum::extract::Query;
use axum::extract::Request;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::routing::post;
use serde_json::Value;
use serde_json::json;

/// The address the fake reports for every allocation (its only "node").
const NODE_IP: &str = "127.0.0.1";
/// Nomad's default kill timeout, when the task sets none.
const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Nomad's default reschedule delay for service jobs, when the group sets none.
const DEFAULT_RESCHEDULE_DELAY: Duration = Duration::from_secs(30);
/// Nomad's default and longest blocking-query waits.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// One request the fake answered.
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: HashMap<String, String>,
    /// `X-Nomad-Token`, if sent.
    pub(crate) token: Option<String>,
    pub(crate) body: String,
    pub(crate) status: u16,
}

impl Logged {
    /// The body as JSON, if it is.
    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// Whether this is `method` on a path ending with `suffix`.
    pub(crate) fn is(&self, method: &str, suffix: &str) -> bool {
        self.method == method && self.path.ends_with(suffix)
    }
}

/// An allocation as the tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllocView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) index: u64,
    pub(crate) client_status: String,
    pub(crate) desired_status: String,
    /// The task's process while it runs.
    pub(crate) pid: Option<u32>,
    pub(crate) previous: Option<String>,
}

/// A job as the tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobView {
    pub(crate) count: u64,
    pub(crate) version: u64,
    pub(crate) stopped: bool,
}

/// The fake Nomad agent; dropping it kills every task it started.
#[derive(Debug)]
pub(crate) struct FakeNomad {
    shared: Arc<Shared>,
    address: String,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<FakeState>,
    /// The Raft-like index after each write; blocking queries and `wait_for` watch it.
    index: tokio::sync::watch::Sender<u64>,
    /// The length of the request log; `wait_for_request` watches it.
    logged: tokio::sync::watch::Sender<usize>,
    /// Alloc directories live here.
    root: tempfile::TempDir,
}

#[derive(Debug, Default)]
struct FakeState {
    index: u64,
    /// The last index that changed an allocation (the "allocs table" index).
    allocs_index: u64,
    jobs: HashMap<JobKey, FakeJob>,
    allocs: BTreeMap<String, FakeAlloc>,
    deployment_active: bool,
    acl_token: Option<String>,
    log: Vec<Logged>,
}

/// (namespace, job id).
type JobKey = (String, String);

#[derive(Debug)]
struct FakeJob {
    /// The job as registered, with the count as last set.
    spec: Value,
    create_index: u64,
    modify_index: u64,
    job_modify_index: u64,
    version: u64,
    stopped: bool,
}

impl FakeJob {
    fn group(&self) -> &Value {
        &self.spec["TaskGroups"][0]
    }

    fn count(&self) -> u64 {
        self.group()["Count"].as_u64().unwrap_or(1)
    }
}

#[derive(Debug)]
struct FakeAlloc {
    id: String,
    key: JobKey,
    job_create_index: u64,
    job_version: u64,
    group: String,
    task: String,
    index: u64,
    name: String,
    client_status: String,
    desired_status: String,
    create_index: u64,
    modify_index: u64,
    /// Dynamic port label → port.
    ports: BTreeMap<String, u16>,
    pid: Option<u32>,
    stop: Option<tokio::sync::mpsc::UnboundedSender<StopKind>>,
    previous: Option<String>,
    next: Option<String>,
    events: Vec<String>,
}

impl FakeAlloc {
    fn live(&self) -> bool {
        self.desired_status == "run" && matches!(self.client_status.as_str(), "pending" | "running")
    }

    fn view(&self) -> AllocView {
        AllocView {
            id: self.id.clone(),
            name: self.name.clone(),
            index: self.index,
            client_status: self.client_status.clone(),
            desired_status: self.desired_status.clone(),
            pid: self.pid,
            previous: self.previous.clone(),
        }
    }

    fn stub(&self) -> Value {
        json!({
            "ID": self.id,
            "EvalID": "00000000-0000-0000-0000-000000000000",
            "Name": self.name,
            "Namespace": self.key.0,
            "NodeID": "fake-node",
            "NodeName": "fake-node",
            "JobID": self.key.1,
            "JobType": "service",
            "JobVersion": self.job_version,
            "TaskGroup": self.group,
            "DesiredStatus": self.desired_status,
            "DesiredDescription": "",
            "ClientStatus": self.client_status,
            "ClientDescription": self.events.last().cloned().unwrap_or_default(),
            "NextAllocation": self.next.clone().unwrap_or_default(),
            "PreviousAllocation": self.previous.clone().unwrap_or_default(),
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        })
    }

    fn detail(&self) -> Value {
        let mut alloc = self.stub();
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|(label, port)| json!({"Label": label, "Value": port, "To": 0, "HostIP": NODE_IP}))
            .collect();
        let dynamic: Vec<Value> = self
            .ports
            .iter()
            .map(|(label, port)| {
                json!({"Label": label, "Value": port, "To": 0, "HostNetwork": "default"})
            })
            .collect();
        let network = json!({"Mode": "host", "IP": NODE_IP, "DynamicPorts": dynamic});
        alloc["AllocatedResources"] = json!({
            "Shared": {"Ports": ports, "Networks": [network.clone()]},
            "Tasks": {},
        });
        alloc["Resources"] = json!({"Networks": [network]});
        let state = match self.client_status.as_str() {
            "pending" => "pending",
            "running" => "running",
            _ => "dead",
        };
        let events: Vec<Value> = self
            .events
            .iter()
            .map(|message| json!({"Type": "Fake", "DisplayMessage": message}))
            .collect();
        alloc["TaskStates"] = json!({self.task.clone(): {
            "State": state,
            "Failed": self.client_status == "failed",
            "Events": events,
        }});
        alloc
    }
}

#[derive(Debug, Clone, Copy)]
enum StopKind {
    /// The task's kill signal, then SIGKILL after its kill timeout.
    Graceful,
    /// SIGKILL to the whole process group at once (the node died).
    Kill,
}

/// How a task's process ended.
enum Ended {
    ByItself(String),
    Stopped,
    Killed,
}

impl FakeState {
    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn job_allocs(&self, key: &JobKey) -> Vec<&FakeAlloc> {
        // Allocations of an earlier job with the same ID are not listed while a newer one exists
        // (Nomad's `Job.Allocations` without `all=true`); once purged, all are.
        let create_index = self.jobs.get(key).map(|job| job.create_index);
        let mut allocs: Vec<&FakeAlloc> = self
            .allocs
            .values()
            .filter(|alloc| &alloc.key == key)
            .filter(|alloc| create_index.is_none_or(|index| alloc.job_create_index == index))
            .collect();
        allocs.sort_by_key(|alloc| alloc.create_index);
        allocs
    }
}

impl FakeNomad {
    /// Starts the fake on a loopback port.
    pub(crate) async fn start() -> FakeNomad {
        let root = tempfile::Builder::new()
            .prefix("slotbox-fake-nomad-")
            .tempdir()
            .unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(FakeState {
                // Nomad's indexes start well above zero; a client that sends index=0 never blocks.
                index: 10,
                ..FakeState::default()
            }),
            index: tokio::sync::watch::Sender::new(10),
            logged: tokio::sync::watch::Sender::new(0),
            root,
        });
        let app = Router::new()
            .route("/v1/jobs", post(register))
            .route("/v1/job/{id}", get(read_job).delete(deregister))
            .route("/v1/job/{id}/scale", post(scale))
            .route("/v1/job/{id}/allocations", get(job_allocations))
            .route("/v1/allocation/{id}", get(read_alloc))
            .route("/v1/allocation/{id}/stop", post(stop_alloc).put(stop_alloc))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&shared),
                log_and_authorize,
            ))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeNomad {
            shared,
            address,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn address(&self) -> String {
        self.address.clone()
    }

    /// The directory holding every alloc directory (it appears in the tasks' environment and in
    /// their sandboxes' command lines).
    pub(crate) fn root(&self) -> &Path {
        self.shared.root.path()
    }

    /// While on, scaling answers 400 as Nomad does during a deployment.
    pub(crate) fn set_deployment_active(&self, active: bool) {
        self.shared.lock().deployment_active = active;
    }

    /// Requires `X-Nomad-Token: token` on every request (403 otherwise).
    pub(crate) fn set_acl_token(&self, token: Option<&str>) {
        self.shared.lock().acl_token = token.map(str::to_owned);
    }

    /// Every request answered so far, in order.
    pub(crate) fn requests(&self) -> Vec<Logged> {
        self.shared.lock().log.clone()
    }

    /// Waits until a request matching `matches` has been answered, and returns it.
    pub(crate) async fn wait_for_request(
        &self,
        timeout: Duration,
        matches: impl Fn(&Logged) -> bool,
    ) -> Logged {
        let mut changes = self.shared.logged.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = self.requests().into_iter().find(|entry| matches(entry)) {
                return found;
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => panic!("no such request within {timeout:?}: {:#?}", self.requests()),
            }
        }
    }

    /// Waits until `check` returns something (checked after every write), or panics after
    /// `timeout` saying `what`.
    pub(crate) async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&FakeNomad) -> Option<T>,
    ) -> T {
        let mut changes = self.shared.index.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => panic!("{what}: not within {timeout:?}; allocations: {:#?}", self.all_allocations()),
            }
        }
    }

    /// A job of the default namespace, or of `namespace`.
    pub(crate) fn job(&self, namespace: &str, id: &str) -> Option<JobView> {
        let state = self.shared.lock();
        state
            .jobs
            .get(&(namespace.to_owned(), id.to_owned()))
            .map(|job| JobView {
                count: job.count(),
                version: job.version,
                stopped: job.stopped,
            })
    }

    /// A job's allocations as `GET /v1/job/:id/allocations` lists them, oldest first.
    pub(crate) fn allocations(&self, namespace: &str, id: &str) -> Vec<AllocView> {
        let state = self.shared.lock();
        state
            .job_allocs(&(namespace.to_owned(), id.to_owned()))
            .into_iter()
            .map(FakeAlloc::view)
            .collect()
    }

    fn all_allocations(&self) -> Vec<AllocView> {
        self.shared
            .lock()
            .allocs
            .values()
            .map(FakeAlloc::view)
            .collect()
    }

    /// The node under a running allocation is lost: its process group is killed at once, the
    /// allocation becomes `lost` (desired `stop`), and a replacement with a new id and the same
    /// name index is placed. Returns once the process is gone, with the replacement's id.
    pub(crate) async fn kill_alloc(&self, id: &str) -> String {
        let replacement = {
            let mut state = self.shared.lock();
            let index = state.bump();
            let alloc = state.allocs.get_mut(id).expect("no such allocation");
            assert!(alloc.live(), "allocation {id} is not running: {alloc:?}");
            alloc.client_status = "lost".to_owned();
            alloc.desired_status = "stop".to_owned();
            alloc.events.push("the node was lost (fake)".to_owned());
            alloc.modify_index = index;
            if let Some(stop) = &alloc.stop {
                let _ = stop.send(StopKind::Kill);
            }
            let (key, name_index) = (alloc.key.clone(), alloc.index);
            state.allocs_index = index;
            let replacement = place(&self.shared, &mut state, &key, name_index, Some(id));
            if let Some(alloc) = state.allocs.get_mut(id) {
                alloc.next = Some(replacement.clone());
            }
            replacement
        };
        self.shared.publish();
        self.wait_for("the killed task to exit", Duration::from_secs(10), |fake| {
            let state = fake.shared.lock();
            state
                .allocs
                .get(id)
                .is_some_and(|alloc| alloc.pid.is_none())
                .then_some(())
        })
        .await;
        replacement
    }
}

impl Drop for FakeNomad {
    fn drop(&mut self) {
        self.server.abort();
        // Tasks die with the fake agent, as they would with a test's Nomad dev agent; their
        // process groups take their children along.
        let state = self.shared.lock();
        for alloc in state.allocs.values() {
            if let Some(pid) = alloc.pid {
                kill_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes blocking queries after a write.
    fn publish(&self) {
        let index = self.lock().index;
        self.index.send_replace(index);
    }
}

fn kill_group(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// Every process below `root`, read from `/proc` (parents before children).
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may contain anything, so parse after its last `)`.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if let Some(parent) = parent {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            found.push(*child);
            queue.push(*child);
        }
    }
    found
}

/// SIGKILL to `pid` and whatever runs below it now.
fn kill_tree(pid: u32) {
    let below = descendants(pid);
    for pid in std::iter::once(pid).chain(below) {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A port nothing listens on right now, from Nomad's default dynamic port range (20000–32000),
/// as Nomad does. That range lies below Linux's ephemeral ports (32768–60999 by default), so
/// the `bind(:0)` of other tests running at once never takes it between this check and the
/// task's own bind; a random start keeps concurrent test processes apart.
fn free_port() -> u16 {
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    let start = u16::try_from(uuid::Uuid::new_v4().as_u128() % u128::from(SPAN)).unwrap_or(0);
    (0..SPAN)
        .map(|offset| LOW + (start + offset) % SPAN)
        .find(|port| std::net::TcpListener::bind((NODE_IP, *port)).is_ok())
        .unwrap_or(0)
}

/// `${NAME}` → the variable's value, for every variable in `env`; unknown ones stay as they are.
fn interpolate(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (name, value) in env {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    out
}

fn duration_field(value: &Value, default: Duration) -> Duration {
    value.as_u64().map(Duration::from_nanos).unwrap_or(default)
}

/// Places one allocation of the job `key` with name index `index` and starts its task.
fn place(
    shared: &Arc<Shared>,
    state: &mut FakeState,
    key: &JobKey,
    index: u64,
    previous: Option<&str>,
) -> String {
    let job = &state.jobs[key];
    let group = job.group().clone();
    let task = group["Tasks"][0].clone();
    let (job_create_index, job_version) = (job.create_index, job.version);
    let group_name = group["Name"].as_str().unwrap_or_default().to_owned();
    let task_name = task["Name"].as_str().unwrap_or_default().to_owned();
    let id = uuid::Uuid::new_v4().to_string();
    let name = format!("{}.{group_name}[{index}]", key.1);
    let alloc_dir = shared.root.path().join(&id).join("alloc");
    let task_dir = shared.root.path().join(&id).join(&task_name);
    for dir in [
        alloc_dir.join("data"),
        alloc_dir.join("logs"),
        alloc_dir.join("tmp"),
        task_dir.join("local"),
    ] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let labels = group["Networks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|network| {
            network["DynamicPorts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|port| port["Label"].as_str().map(str::to_owned));
    let ports: BTreeMap<String, u16> = labels.map(|label| (label, free_port())).collect();
    let created = state.bump();
    let mut alloc = FakeAlloc {
        id: id.clone(),
        key: key.clone(),
        job_create_index,
        job_version,
        group: group_name.clone(),
        task: task_name.clone(),
        index,
        name: name.clone(),
        client_status: "pending".to_owned(),
        desired_status: "run".to_owned(),
        create_index: created,
        modify_index: created,
        ports: ports.clone(),
        pid: None,
        stop: None,
        previous: previous.map(str::to_owned),
        next: None,
        events: Vec::new(),
    };
    let mut env = BTreeMap::new();
    let mut set = |name: &str, value: String| {
        env.insert(name.to_owned(), value);
    };
    set("NOMAD_ALLOC_DIR", alloc_dir.display().to_string());
    set(
        "NOMAD_TASK_DIR",
        task_dir.join("local").display().to_string(),
    );
    set("NOMAD_ALLOC_ID", id.clone());
    set("NOMAD_ALLOC_NAME", name.clone());
    set("NOMAD_ALLOC_INDEX", index.to_string());
    set("NOMAD_JOB_ID", key.1.clone());
    set("NOMAD_JOB_NAME", key.1.clone());
    set("NOMAD_GROUP_NAME", group_name);
    set("NOMAD_TASK_NAME", task_name.clone());
    set("NOMAD_NAMESPACE", key.0.clone());
    set("NOMAD_REGION", "global".to_owned());
    set("NOMAD_DC", "dc1".to_owned());
    for (label, port) in &ports {
        set(&format!("NOMAD_PORT_{label}"), port.to_string());
        set(&format!("NOMAD_HOST_PORT_{label}"), port.to_string());
        set(&format!("NOMAD_IP_{label}"), NODE_IP.to_owned());
        set(&format!("NOMAD_HOST_IP_{label}"), NODE_IP.to_owned());
        set(&format!("NOMAD_ADDR_{label}"), format!("{NODE_IP}:{port}"));
    }
    let task_env: Vec<(String, String)> = task["Env"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            (
                name.clone(),
                interpolate(value.as_str().unwrap_or_default(), &env),
            )
        })
        .collect();
    env.extend(task_env);
    match start_task(&task, &env, &task_dir, &alloc_dir.join("logs")) {
        Ok(child) => {
            alloc.pid = child.id();
            alloc.client_status = "running".to_owned();
            alloc
                .events
                .push("Task started by client (fake)".to_owned());
            let (stop, stops) = tokio::sync::mpsc::unbounded_channel();
            alloc.stop = Some(stop);
            let kill_signal = match task["KillSignal"].as_str() {
                Some("SIGTERM") => nix::sys::signal::Signal::SIGTERM,
                Some("SIGKILL") => nix::sys::signal::Signal::SIGKILL,
                Some("SIGHUP") => nix::sys::signal::Signal::SIGHUP,
                Some("SIGQUIT") => nix::sys::signal::Signal::SIGQUIT,
                // Nomad's default kill signal.
                _ => nix::sys::signal::Signal::SIGINT,
            };
            let kill_timeout = duration_field(&task["KillTimeout"], DEFAULT_KILL_TIMEOUT);
            tokio::spawn(watch_task(
                Arc::clone(shared),
                id.clone(),
                child,
                stops,
                kill_signal,
                kill_timeout,
            ));
        }
        Err(reason) => {
            alloc.client_status = "failed".to_owned();
            alloc.events.push(reason);
        }
    }
    state.allocs.insert(id.clone(), alloc);
    state.allocs_index = state.index;
    id
}

/// Starts a `raw_exec` task.
fn start_task(
    task: &Value,
    env: &BTreeMap<String, String>,
    task_dir: &Path,
    logs: &Path,
) -> Result<tokio::process::Child, String> {
    let driver = task["Driver"].as_str().unwrap_or_default();
    if driver != "raw_exec" {
        return Err(format!(
            "driver {driver:?} is not available on the fake's node"
        ));
    }
    let command = task["Config"]["command"]
        .as_str()
        .ok_or("raw_exec needs config.command")?;
    let args: Vec<String> = task["Config"]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|arg| interpolate(arg.as_str().unwrap_or_default(), env))
        .collect();
    let name = task["Name"].as_str().unwrap_or("task");
    let stdout = std::fs::File::create(logs.join(format!("{name}.stdout.0")))
        .map_err(|error| error.to_string())?;
    tokio::process::Command::new(interpolate(command, env))
        .args(args)
        .envs(env)
        .current_dir(task_dir)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        // The test's stderr: a failing server says why where the test output shows it.
        .stderr(std::process::Stdio::inherit())
        // Its own process group, so stopping the task takes its children along (Nomad's executor
        // kills the whole task).
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("failed to start task {name}: {command}: {error}"))
}

/// Owns a task's process: waits for it to exit or to be stopped, then records the outcome.
async fn watch_task(
    shared: Arc<Shared>,
    id: String,
    mut child: tokio::process::Child,
    mut stops: tokio::sync::mpsc::UnboundedReceiver<StopKind>,
    kill_signal: nix::sys::signal::Signal,
    kill_timeout: Duration,
) {
    let pid = child.id();
    // The task's process tree as it was when the stop came: a process that left the task's
    // process group (bwrap sandboxes run under `setsid`) is still the task's, and Nomad's
    // executor kills it with the rest.
    let mut tree = Vec::new();
    let ended = tokio::select! {
        status = child.wait() => Ended::ByItself(match status {
            Ok(status) => format!("the task exited: {status}"),
            Err(error) => format!("the task could not be waited for: {error}"),
        }),
        stop = stops.recv() => match stop {
            Some(StopKind::Kill) => {
                if let Some(pid) = pid {
                    tree = descendants(pid);
                    kill_group(pid, nix::sys::signal::Signal::SIGKILL);
                }
                let _ = child.wait().await;
                Ended::Killed
            }
            Some(StopKind::Graceful) | None => {
                tree = pid.map(descendants).unwrap_or_default();
                if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), kill_signal);
                }
                if tokio::time::timeout(kill_timeout, child.wait()).await.is_err() {
                    if let Some(pid) = pid {
                        kill_group(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    let _ = child.wait().await;
                }
                Ended::Stopped
            }
        },
    };
    // Whatever the task left behind goes with it.
    if let Some(pid) = pid {
        kill_group(pid, nix::sys::signal::Signal::SIGKILL);
    }
    for pid in tree {
        kill_tree(pid);
    }
    task_ended(&shared, &id, ended);
    shared.publish();
}

fn task_ended(shared: &Arc<Shared>, id: &str, ended: Ended) {
    let mut state = shared.lock();
    let index = state.bump();
    state.allocs_index = index;
    let Some(alloc) = state.allocs.get_mut(id) else {
        return;
    };
    alloc.pid = None;
    alloc.stop = None;
    alloc.modify_index = index;
    let reschedule = match ended {
        Ended::ByItself(message) => {
            alloc.events.push(message);
            if alloc.desired_status == "run" {
                alloc.client_status = "failed".to_owned();
                Some((alloc.key.clone(), alloc.index, alloc.job_create_index))
            } else {
                alloc.client_status = "complete".to_owned();
                None
            }
        }
        Ended::Stopped => {
            if alloc.client_status == "running" || alloc.client_status == "pending" {
                alloc.client_status = "complete".to_owned();
            }
            None
        }
        Ended::Killed => None,
    };
    // A failed allocation is replaced after the group's reschedule delay, as Nomad does.
    if let Some((key, name_index, job_create_index)) = reschedule {
        let delay = state
            .jobs
            .get(&key)
            .map(|job| {
                duration_field(
                    &job.group()["ReschedulePolicy"]["Delay"],
                    DEFAULT_RESCHEDULE_DELAY,
                )
            })
            .unwrap_or(DEFAULT_RESCHEDULE_DELAY);
        let shared = Arc::clone(shared);
        let failed = id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            {
                let mut state = shared.lock();
                let still_wanted = state
                    .jobs
                    .get(&key)
                    .is_some_and(|job| !job.stopped && job.create_index == job_create_index);
                let taken = state
                    .job_allocs(&key)
                    .iter()
                    .any(|alloc| alloc.live() && alloc.index == name_index);
                if still_wanted && !taken {
                    let replacement = place(&shared, &mut state, &key, name_index, Some(&failed));
                    if let Some(alloc) = state.allocs.get_mut(&failed) {
                        alloc.next = Some(replacement);
                    }
                }
            }
            shared.publish();
        });
    }
}

/// Asks an allocation's task to stop (desired `stop` now, `complete` once its process exited).
fn stop_gracefully(state: &mut FakeState, id: &str) {
    let index = state.bump();
    state.allocs_index = index;
    if let Some(alloc) = state.allocs.get_mut(id) {
        alloc.desired_status = "stop".to_owned();
        alloc.modify_index = index;
        match &alloc.stop {
            Some(stop) => {
                let _ = stop.send(StopKind::Graceful);
            }
            None if alloc.client_status == "pending" => alloc.client_status = "complete".to_owned(),
            None => {}
        }
    }
}

/// Brings the job's live allocations to its count: the lowest free name indexes are placed,
/// the highest are stopped.
fn reconcile(shared: &Arc<Shared>, state: &mut FakeState, key: &JobKey) {
    let Some(job) = state.jobs.get(key) else {
        return;
    };
    let wanted = if job.stopped { 0 } else { job.count() };
    let mut live: Vec<(u64, String)> = state
        .job_allocs(key)
        .into_iter()
        .filter(|alloc| alloc.live())
        .map(|alloc| (alloc.index, alloc.id.clone()))
        .collect();
    live.sort();
    let have = u64::try_from(live.len()).unwrap_or(u64::MAX);
    if have > wanted {
        let surplus = usize::try_from(have - wanted).unwrap_or(usize::MAX);
        for (_, id) in live.iter().rev().take(surplus) {
            stop_gracefully(state, id);
        }
    }
    let used: HashSet<u64> = live.iter().map(|(index, _)| *index).collect();
    let mut missing = wanted.saturating_sub(have);
    let mut index = 0;
    while missing > 0 {
        if !used.contains(&index) {
            place(shared, state, key, index, None);
            missing -= 1;
        }
        index += 1;
    }
}

fn namespace_of(query: &HashMap<String, String>) -> String {
    query
        .get("namespace")
        .cloned()
        .unwrap_or_else(|| "default".to_owned())
}

/// Nomad's error answers are plain text.
fn text(status: StatusCode, message: &str) -> Response {
    (status, message.to_owned()).into_response()
}

fn with_index(body: Value, index: u64) -> Response {
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert("X-Nomad-Index", HeaderValue::from(index.max(1)));
    headers.insert("X-Nomad-KnownLeader", HeaderValue::from_static("true"));
    headers.insert("X-Nomad-LastContact", HeaderValue::from_static("0"));
    response
}

/// `"30s"`, `"1500ms"`, `"5m"` (Go durations as Nomad parses them; one unit is enough here).
fn parse_wait(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ns" => number / 1e9,
        "us" | "µs" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// Answers a read as a blocking query: with `?index=N`, not before the resource's index passes N
/// or the wait elapses. `read` gives the body and the resource's index, or `None` for 404.
async fn blocking(
    shared: &Shared,
    query: &HashMap<String, String>,
    not_found: &str,
    read: impl Fn(&FakeState) -> Option<(Value, u64)>,
) -> Response {
    let min_index: Option<u64> = query.get("index").and_then(|index| index.parse().ok());
    let wait = query
        .get("wait")
        .and_then(|wait| parse_wait(wait))
        .unwrap_or(DEFAULT_WAIT)
        .min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribed before reading, so no write between the read and the wait is missed.
    let mut changes = shared.index.subscribe();
    loop {
        let answer = read(&shared.lock());
        let Some((body, index)) = answer else {
            return text(StatusCode::NOT_FOUND, not_found);
        };
        if min_index.is_none_or(|min| index > min) || tokio::time::Instant::now() >= deadline {
            return with_index(body, index);
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Logs every request (body included) with its answer's status, and enforces the ACL token.
async fn log_and_authorize(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let query: HashMap<String, String> = parts.uri.query().map(url_pairs).unwrap_or_default();
    let token = parts
        .headers
        .get("X-Nomad-Token")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut entry = Logged {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query,
        token: token.clone(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        status: 0,
    };
    let required = shared.lock().acl_token.clone();
    let response = match required {
        Some(required) if token.as_deref() != Some(required.as_str()) => {
            text(StatusCode::FORBIDDEN, "Permission denied")
        }
        _ => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    };
    entry.status = response.status().as_u16();
    let length = {
        let mut state = shared.lock();
        state.log.push(entry);
        state.log.len()
    };
    shared.logged.send_replace(length);
    response
}

/// `a=1&b=x%2Fy` → {a: 1, b: x/y} (enough decoding for the parameters slotbox sends).
fn url_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn register(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return text(
            StatusCode::BAD_REQUEST,
            "failed to parse the request body as JSON",
        );
    };
    // Nomad's handler: `if args.Job == nil { return CodedError(400, "Job must be specified") }`.
    let Some(job) = request.get("Job").filter(|job| job.is_object()).cloned() else {
        return text(StatusCode::BAD_REQUEST, "Job must be specified");
    };
    if let Err(problem) = validate(&job) {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("1 error occurred:\n\t* {problem}\n\n"),
        );
    }
    let id = job["ID"].as_str().unwrap_or_default().to_owned();
    let namespace = job["Namespace"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| namespace_of(&query));
    let key = (namespace, id);
    let answer = {
        let mut state = shared.lock();
        let index = state.bump();
        match state.jobs.get_mut(&key) {
            Some(existing) if existing.spec == job && !existing.stopped => {
                // No change: Nomad keeps the job and its allocations as they are.
            }
            Some(existing) if without_counts(&existing.spec) == without_counts(&job) => {
                existing.spec = job;
                existing.version += 1;
                existing.stopped = false;
                existing.modify_index = index;
                existing.job_modify_index = index;
            }
            Some(existing) => {
                // A new spec: every allocation is replaced.
                existing.spec = job;
                existing.version += 1;
                existing.stopped = false;
                existing.modify_index = index;
                existing.job_modify_index = index;
                let old: Vec<String> = state
                    .job_allocs(&key)
                    .iter()
                    .filter(|alloc| alloc.live())
                    .map(|alloc| alloc.id.clone())
                    .collect();
                for id in old {
                    stop_gracefully(&mut state, &id);
                }
            }
            None => {
                state.jobs.insert(
                    key.clone(),
                    FakeJob {
                        spec: job,
                        create_index: index,
                        modify_index: index,
                        job_modify_index: index,
                        version: 0,
                        stopped: false,
                    },
                );
            }
        }
        reconcile(&shared, &mut state, &key);
        let job_modify_index = state.jobs[&key].job_modify_index;
        json!({
            "EvalID": uuid::Uuid::new_v4().to_string(),
            "EvalCreateIndex": index,
            "JobModifyIndex": job_modify_index,
            "Warnings": "",
            "Index": index,
            "LastContact": 0,
            "KnownLeader": false,
        })
    };
    shared.publish();
    Json(answer).into_response()
}

/// The checks Nomad makes that a slotbox job could fail, and the fake's own limits.
fn validate(job: &Value) -> Result<(), String> {
    if job["ID"].as_str().is_none_or(str::is_empty) {
        return Err("Missing job ID".to_owned());
    }
    let groups = job["TaskGroups"].as_array().cloned().unwrap_or_default();
    if groups.len() != 1 {
        return Err("the fake supports exactly one task group".to_owned());
    }
    let group = &groups[0];
    if group["Name"].as_str().is_none_or(str::is_empty) {
        return Err("Missing task group name".to_owned());
    }
    let tasks = group["Tasks"].as_array().cloned().unwrap_or_default();
    if tasks.len() != 1 {
        return Err("the fake supports exactly one task".to_owned());
    }
    if let Some(memory) = tasks[0]["Resources"]["MemoryMB"].as_u64()
        && memory < 10
    {
        return Err(format!(
            "Task group {} validation failed: Task {} validation failed: minimum MemoryMB value is 10; got {memory}",
            group["Name"].as_str().unwrap_or_default(),
            tasks[0]["Name"].as_str().unwrap_or_default()
        ));
    }
    Ok(())
}

fn without_counts(job: &Value) -> Value {
    let mut job = job.clone();
    if let Some(groups) = job["TaskGroups"].as_array_mut() {
        for group in groups {
            if let Some(group) = group.as_object_mut() {
                group.remove("Count");
            }
        }
    }
    job
}

async fn read_job(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let key = (namespace_of(&query), id);
    blocking(&shared, &query, "job not found", |state| {
        let job = state.jobs.get(&key)?;
        let live = state.job_allocs(&key).iter().any(|alloc| alloc.live());
        let mut body = job.spec.clone();
        body["Namespace"] = json!(key.0);
        body["Region"] = json!("global");
        body["Status"] = json!(if job.stopped {
            "dead"
        } else if live {
            "running"
        } else {
            "pending"
        });
        body["Stop"] = json!(job.stopped);
        body["Version"] = json!(job.version);
        body["CreateIndex"] = json!(job.create_index);
        body["ModifyIndex"] = json!(job.modify_index);
        body["JobModifyIndex"] = json!(job.job_modify_index);
        Some((body, job.modify_index))
    })
    .await
}

async fn deregister(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let key = (namespace_of(&query), id);
    let purge = query.get("purge").is_some_and(|purge| purge == "true");
    let answer = {
        let mut state = shared.lock();
        if !state.jobs.contains_key(&key) {
            return text(StatusCode::NOT_FOUND, "job not found");
        }
        let index = state.bump();
        if let Some(job) = state.jobs.get_mut(&key) {
            job.stopped = true;
            job.modify_index = index;
            job.job_modify_index = index;
        }
        reconcile(&shared, &mut state, &key);
        if purge {
            state.jobs.remove(&key);
        }
        json!({
            "EvalID": uuid::Uuid::new_v4().to_string(),
            "EvalCreateIndex": index,
            "JobModifyIndex": index,
            "Index": index,
        })
    };
    shared.publish();
    Json(answer).into_response()
}

async fn scale(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let key = (namespace_of(&query), id);
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return text(
            StatusCode::BAD_REQUEST,
            "failed to parse the request body as JSON",
        );
    };
    let answer = {
        let mut state = shared.lock();
        let Some(job) = state.jobs.get(&key) else {
            return text(StatusCode::NOT_FOUND, "job not found");
        };
        let group = job.group()["Name"].as_str().unwrap_or_default().to_owned();
        let Some(target) = request["Target"]["Group"].as_str() else {
            return text(
                StatusCode::BAD_REQUEST,
                "missing task group name for scaling action",
            );
        };
        if target != group {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("task group \"{target}\" specified for scaling does not exist in job"),
            );
        }
        let Some(count) = request["Count"].as_u64() else {
            return text(
                StatusCode::BAD_REQUEST,
                "scaling action count can't be negative or missing",
            );
        };
        if state.deployment_active {
            return text(
                StatusCode::BAD_REQUEST,
                "job scaling blocked due to active deployment",
            );
        }
        let index = state.bump();
        if let Some(job) = state.jobs.get_mut(&key) {
            job.spec["TaskGroups"][0]["Count"] = json!(count);
            job.version += 1;
            job.modify_index = index;
            job.job_modify_index = index;
        }
        reconcile(&shared, &mut state, &key);
        json!({
            "EvalID": uuid::Uuid::new_v4().to_string(),
            "EvalCreateIndex": index,
            "JobModifyIndex": index,
            "Index": index,
            "Warnings": "",
        })
    };
    shared.publish();
    Json(answer).into_response()
}

async fn job_allocations(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let key = (namespace_of(&query), id);
    blocking(&shared, &query, "job not found", |state| {
        let allocs = state.job_allocs(&key);
        // Nomad's index for the list: the latest change to any allocation.
        let index = state.allocs_index;
        let stubs: Vec<Value> = allocs.iter().map(|alloc| alloc.stub()).collect();
        Some((Value::Array(stubs), index))
    })
    .await
}

async fn read_alloc(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    blocking(&shared, &query, "alloc not found", |state| {
        let alloc = state.allocs.get(&id)?;
        Some((alloc.detail(), alloc.modify_index))
    })
    .await
}

async fn stop_alloc(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> Response {
    let answer = {
        let mut state = shared.lock();
        let Some(alloc) = state.allocs.get(&id) else {
            return text(StatusCode::NOT_FOUND, "alloc not found");
        };
        let (key, name_index, live) = (alloc.key.clone(), alloc.index, alloc.live());
        if live {
            stop_gracefully(&mut state, &id);
            // Nomad reschedules a stopped allocation: the count stays.
            let wanted = state.jobs.get(&key).is_some_and(|job| !job.stopped);
            if wanted {
                let replacement = place(&shared, &mut state, &key, name_index, Some(&id));
                if let Some(alloc) = state.allocs.get_mut(&id) {
                    alloc.next = Some(replacement);
                }
            }
        }
        json!({"EvalID": uuid::Uuid::new_v4().to_string(), "Index": state.index})
    };
    shared.publish();
    Json(answer).into_response()
}
