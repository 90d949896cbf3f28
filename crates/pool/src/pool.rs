//! The pool: places leases on servers, forwards calls, and takes lost servers out at once.
//!
//! Invariants:
//! - The semaphore's permits equal the free slots of live servers (fair: first come, first
//!   served across the whole pool).
//! - A pool lease maps to exactly one server lease. A server that stops answering (or dies) is
//!   dropped with all its leases, which answer `slot_lost` from then on; its free slots leave the
//!   pool and a replacement is started.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use slotbox_client::Client;
use slotbox_client::ErrorCode;
use slotbox_protocol::v1::CreateLease;
use slotbox_protocol::v1::Lease;
use tokio::sync::Semaphore;

use crate::Error;
use crate::Result;
use crate::scheduler::Scheduler;
use crate::scheduler::ServerHandle;

/// How long a server that broke a call has to answer its health check before it is taken out.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A server in the pool.
#[derive(Debug)]
struct Server {
    handle: ServerHandle,
    client: Client,
    /// Slots not held by a pool lease.
    free: usize,
    /// Since when every slot has been free (scaling down retires long-idle servers).
    idle_since: Option<tokio::time::Instant>,
}

/// Where a pool lease lives.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub(crate) server: String,
    pub(crate) server_lease: String,
    pub(crate) client: Client,
    /// When the server will expire the lease unless renewed.
    pub(crate) expires_at: tokio::time::Instant,
}

/// What happened to a lease the pool no longer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    /// Its server died.
    SlotLost,
}

#[derive(Debug, Default)]
struct State {
    servers: Vec<Server>,
    leases: HashMap<String, Placement>,
    /// Leases whose server was lost, answered `slot_lost` (kept so clients learn why).
    lost: HashMap<String, Gone>,
    /// Acquires waiting for a slot right now, and since when some have been waiting without a
    /// break (scaling up answers sustained waiting).
    waiters: usize,
    waiting_since: Option<tokio::time::Instant>,
}

/// The slot pool.
#[derive(Debug)]
pub struct Pool {
    scheduler: Arc<dyn Scheduler>,
    state: Mutex<State>,
    permits: Semaphore,
    token: Option<String>,
    /// Wakes the expiry task when the earliest expiry may have changed.
    expiry_changed: tokio::sync::Notify,
    /// Permits still to take out of circulation for slots of lost servers (they may be held by
    /// waiters at the moment of the loss, so they are retired as they come back).
    retire: AtomicUsize,
    /// Stops of lost servers still running (their containers or allocations are freed in the
    /// background so the client hears `slot_lost` at once; shutdown waits for them).
    stopping: Mutex<tokio::task::JoinSet<()>>,
    /// Servers being started right now.
    starting: AtomicUsize,
    /// Signalled whenever a start ends.
    starts_done: tokio::sync::Notify,
    /// Set once by `shutdown`: no server is added from then on.
    shutting_down: std::sync::atomic::AtomicBool,
    counters: crate::metrics::Counters,
}

/// What the autoscaler sees of the pool at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Live servers: (id, since when all its slots are free), oldest first.
    pub servers: Vec<(String, Option<tokio::time::Instant>)>,
    /// Servers being started.
    pub starting: usize,
    /// Acquires waiting for a slot.
    pub waiters: usize,
    /// Since when acquires have been waiting without a break.
    pub waiting_since: Option<tokio::time::Instant>,
}

/// Counts an acquire as waiting while it lives.
struct Waiting<'a> {
    pool: &'a Pool,
}

impl<'a> Waiting<'a> {
    fn new(pool: &'a Pool) -> Self {
        let mut state = pool.state();
        state.waiters += 1;
        if state.waiting_since.is_none() {
            state.waiting_since = Some(tokio::time::Instant::now());
        }
        Self { pool }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.state();
        state.waiters -= 1;
        if state.waiters == 0 {
            state.waiting_since = None;
        }
    }
}

/// Counts a server start while it lives (shutdown waits for the count to reach zero).
struct Starting<'a>(&'a AtomicUsize, &'a tokio::sync::Notify);

impl<'a> Starting<'a> {
    fn new(counter: &'a AtomicUsize, done: &'a tokio::sync::Notify) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter, done)
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.notify_waiters();
    }
}

/// A slot taken from a server's free count for an acquire in progress; given back on drop.
struct Claim<'a> {
    pool: &'a Pool,
    server: Option<String>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.pool.give_back(&server);
        }
    }
}

impl Pool {
    /// A pool over `scheduler`'s servers; `token` is the servers' bearer token, if any.
    pub fn new(scheduler: Arc<dyn Scheduler>, token: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            scheduler,
            state: Mutex::new(State::default()),
            permits: Semaphore::new(0),
            token,
            expiry_changed: tokio::sync::Notify::new(),
            retire: AtomicUsize::new(0),
            stopping: Mutex::new(tokio::task::JoinSet::new()),
            starting: AtomicUsize::new(0),
            starts_done: tokio::sync::Notify::new(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            counters: crate::metrics::Counters::default(),
        })
    }

    /// Records a renewal's new expiry; `false` when the pool had already expired the lease
    /// (a renewal that raced its expiry), which the caller then undoes on the server.
    pub(crate) fn renewed(&self, lease_id: &str, expires_at: &str) -> bool {
        let found = match self.state().leases.get_mut(lease_id) {
            Some(placement) => {
                placement.expires_at = instant_of(expires_at);
                true
            }
            None => false,
        };
        self.expiry_changed.notify_one();
        found
    }

    /// Forgets leases as they expire (their servers reset and free the slots at the same time),
    /// so an abandoned lease's capacity returns to the pool. Runs until the pool is dropped.
    pub async fn expire_leases(self: Arc<Self>) {
        loop {
            let now = tokio::time::Instant::now();
            let (expired, next): (Vec<String>, Option<tokio::time::Instant>) = {
                let state = self.state();
                let expired = state
                    .leases
                    .iter()
                    .filter(|(_, placement)| placement.expires_at <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                let next = state
                    .leases
                    .values()
                    .map(|placement| placement.expires_at)
                    .filter(|at| *at > now)
                    .min();
                (expired, next)
            };
            for lease_id in expired {
                tracing::info!(lease_id, "lease expired");
                self.forget(&lease_id);
            }
            tokio::select! {
                () = tokio::time::sleep_until(next.unwrap_or(now + Duration::from_secs(3600))) => {}
                () = self.expiry_changed.notified() => {}
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The scheduler's name.
    pub fn scheduler_name(&self) -> &'static str {
        self.scheduler.name()
    }

    /// Starts a server and adds its slots.
    pub async fn add_server(&self) -> Result<()> {
        let starting = Starting::new(&self.starting, &self.starts_done);
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let handle = match self.scheduler.start_server().await {
            Ok(handle) => handle,
            Err(error) => {
                self.counters.server_start_failures.inc();
                return Err(error);
            }
        };
        let mut client = Client::new(&handle.base_url);
        if let Some(token) = handle.token.as_ref().or(self.token.as_ref()) {
            client = client.with_token(token);
        }
        // Readiness: the server answers its health check before its slots are used. One that
        // does not is stopped, not left running unused.
        let health = match client.health().await {
            Ok(health) => health,
            Err(error) => {
                self.counters.server_start_failures.inc();
                self.stop_quietly(&handle.id).await;
                return Err(Error::Scheduler(format!(
                    "server {} is not ready: {error}",
                    handle.id
                )));
            }
        };
        let slots = health.slots;
        {
            let mut state = self.state();
            // Shutdown began while this server started: it would be missed by the shutdown's
            // stops, so it is stopped here (the shutdown waits for this).
            if !self.shutting_down.load(Ordering::Acquire) {
                tracing::info!(server = %handle.id, url = %handle.base_url, slots, "server added");
                state.servers.push(Server {
                    handle,
                    client,
                    free: slots,
                    idle_since: Some(tokio::time::Instant::now()),
                });
                drop(state);
                self.permits.add_permits(slots);
                self.counters.servers_started.inc();
                return Ok(());
            }
        }
        self.stop_quietly(&handle.id).await;
        drop(starting);
        Err(Error::ShuttingDown)
    }

    /// Whether `shutdown` has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    async fn stop_quietly(&self, server_id: &str) {
        if let Err(error) = self.scheduler.stop_server(server_id).await {
            tracing::warn!(server = server_id, %error, "could not stop a server");
        }
    }

    /// The Prometheus text exposition of the pool's metrics.
    pub fn metrics_text(&self) -> String {
        let snapshot = {
            let state = self.state();
            crate::metrics::Snapshot {
                servers: state.servers.len(),
                starting: self.starting.load(Ordering::Acquire),
                slots: state.servers.iter().map(|server| server.handle.slots).sum(),
                free: state.servers.iter().map(|server| server.free).sum(),
                leases: state.leases.len(),
                waiters: state.waiters,
            }
        };
        crate::metrics::render(&self.counters, &snapshot, self.scheduler.name())
    }

    /// Every server's handle (id, URL, slots, token), for operators and benchmarks.
    pub fn server_handles(&self) -> Vec<ServerHandle> {
        self.state()
            .servers
            .iter()
            .map(|server| server.handle.clone())
            .collect()
    }

    /// Every server's id and base URL.
    pub fn servers(&self) -> Vec<(String, String)> {
        self.state()
            .servers
            .iter()
            .map(|server| (server.handle.id.clone(), server.handle.base_url.clone()))
            .collect()
    }

    /// (servers, total slots, free slots).
    pub fn capacity(&self) -> (usize, usize, usize) {
        let state = self.state();
        let total = state.servers.iter().map(|server| server.handle.slots).sum();
        let free = state.servers.iter().map(|server| server.free).sum();
        (state.servers.len(), total, free)
    }

    /// Leases a slot on some server, waiting first come, first served up to `wait`.
    pub async fn acquire(self: &Arc<Self>, request: &CreateLease, wait: Duration) -> Result<Lease> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.try_place(request, deadline).await {
                // The server had no slot after all (one still being reset after an expiry, or
                // quarantined): give the client's remaining wait another try.
                Err(Error::Server { code, .. })
                    if code == slotbox_protocol::v1::codes::NO_SLOT
                        && tokio::time::Instant::now() < deadline => {}
                Err(Error::Server { code, .. }) if code == slotbox_protocol::v1::codes::NO_SLOT => {
                    return Err(Error::NoSlot(wait));
                }
                // The chosen server died under us: it is out of the pool now; try the others.
                Err(Error::SlotLost(_)) if tokio::time::Instant::now() < deadline => {}
                Err(Error::SlotLost(_)) => return Err(Error::NoSlot(wait)),
                other => return other,
            }
        }
    }

    /// One placement attempt: a permit, the server with the most free slots, a lease there.
    async fn try_place(
        self: &Arc<Self>,
        request: &CreateLease,
        deadline: tokio::time::Instant,
    ) -> Result<Lease> {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (server_id, client) = loop {
            let permit = match self.permits.try_acquire() {
                Ok(permit) => permit,
                Err(_) => {
                    let _waiting = Waiting::new(self);
                    tokio::time::timeout_at(deadline, self.permits.acquire())
                        .await
                        .map_err(|_| Error::NoSlot(wait))?
                        .map_err(|_| Error::ShuttingDown)?
                }
            };
            permit.forget();
            // A permit owed to a lost server's slots is retired, not used.
            if self
                .retire
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                    owed.checked_sub(1)
                })
                .is_ok()
            {
                continue;
            }
            // The server with the most free slots spreads the load.
            let mut state = self.state();
            let best = state
                .servers
                .iter_mut()
                .filter(|server| server.free > 0)
                .max_by_key(|server| server.free);
            if let Some(server) = best {
                server.free -= 1;
                server.idle_since = None;
                break (server.handle.id.clone(), server.client.clone());
            }
            // Its slot's server was lost meanwhile (the permit was taken before the loss could
            // take it out): it pays that loss's debt, if any, and is gone; wait again.
            let _ = self
                .retire
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                    owed.checked_sub(1)
                });
        };
        // If this future is dropped from here on (the client went away), the slot comes back.
        let mut claim = Claim {
            pool: self,
            server: Some(server_id.clone()),
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let on_server = CreateLease {
            wait_s: Some(remaining.min(Duration::from_secs(5)).as_secs_f64()),
            ..request.clone()
        };
        match client.lease(&on_server).await {
            Ok(lease) => {
                let pool_lease = uuid::Uuid::new_v4().simple().to_string();
                let slot_id = format!("{server_id}/{}", lease.slot_id);
                let mut state = self.state();
                // The server was lost while the lease was being made: not a live lease.
                if !state
                    .servers
                    .iter()
                    .any(|server| server.handle.id == server_id)
                {
                    drop(state);
                    return Err(Error::SlotLost(format!("(a new lease on {server_id})")));
                }
                state.leases.insert(
                    pool_lease.clone(),
                    Placement {
                        server: server_id,
                        server_lease: lease.lease_id.clone(),
                        client,
                        expires_at: instant_of(&lease.expires_at),
                    },
                );
                drop(state);
                claim.server = None;
                self.counters.leases_granted.inc();
                self.expiry_changed.notify_one();
                Ok(Lease {
                    lease_id: pool_lease,
                    slot_id,
                    expires_at: lease.expires_at,
                })
            }
            Err(error) => {
                drop(claim);
                if self.server_gone(&server_id, &error).await {
                    self.lose_server(&server_id);
                    return Err(Error::SlotLost(format!("(a new lease on {server_id})")));
                }
                Err(Error::from_server(error))
            }
        }
    }

    fn give_back(&self, server_id: &str) {
        let mut state = self.state();
        if let Some(server) = state
            .servers
            .iter_mut()
            .find(|server| server.handle.id == server_id)
        {
            server.free += 1;
            if server.free == server.handle.slots {
                server.idle_since = Some(tokio::time::Instant::now());
            }
            drop(state);
            self.permits.add_permits(1);
        }
    }

    /// What the autoscaler needs to decide.
    pub fn observe(&self) -> Observation {
        let state = self.state();
        Observation {
            servers: state
                .servers
                .iter()
                .map(|server| (server.handle.id.clone(), server.idle_since))
                .collect(),
            starting: self.starting.load(Ordering::Acquire),
            waiters: state.waiters,
            waiting_since: state.waiting_since,
        }
    }

    /// Gives an idle server back to the scheduler (scaling down). Returns `false`, changing
    /// nothing, if it is not idle any more (a lease got there first).
    pub async fn retire_idle_server(&self, server_id: &str) -> Result<bool> {
        let server = {
            let mut state = self.state();
            let Some(index) = state.servers.iter().position(|server| {
                server.handle.id == server_id && server.free == server.handle.slots
            }) else {
                return Ok(false);
            };
            // Its free slots leave the pool first, so no acquire can land on it.
            let slots = state.servers[index].free;
            match self
                .permits
                .try_acquire_many(u32::try_from(slots).unwrap_or(u32::MAX))
            {
                Ok(permits) => permits.forget(),
                Err(_) => return Ok(false),
            }
            state.servers.remove(index)
        };
        tracing::info!(server = server_id, "retiring an idle server");
        if let Err(error) = self.scheduler.retire_server(server_id).await {
            // Not retired after all (e.g. Nomad could not lower the count just now): the server
            // still runs, so its slots come back rather than leak.
            let slots = server.free;
            let mut state = self.state();
            if self.shutting_down.load(Ordering::Acquire) {
                drop(state);
                self.stop_quietly(server_id).await;
            } else {
                state.servers.push(server);
                drop(state);
                self.permits.add_permits(slots);
            }
            return Err(error);
        }
        self.counters.servers_retired.inc();
        Ok(true)
    }

    /// Which of `idle` (oldest first) the scheduler would rather retire.
    pub fn pick_retiree(&self, idle: &[String]) -> Option<String> {
        self.scheduler.pick_retiree(idle)
    }

    /// Where a lease lives, or why it is gone.
    pub(crate) fn placement(&self, lease_id: &str) -> Result<Placement> {
        let state = self.state();
        if let Some(placement) = state.leases.get(lease_id) {
            return Ok(placement.clone());
        }
        match state.lost.get(lease_id) {
            Some(Gone::SlotLost) => Err(Error::SlotLost(lease_id.to_owned())),
            None => Err(Error::UnknownLease(lease_id.to_owned())),
        }
    }

    /// Maps a failed forwarded call: a transport failure means the server is gone.
    pub(crate) async fn after_error(
        &self,
        lease_id: &str,
        placement: &Placement,
        error: slotbox_client::Error,
    ) -> Error {
        match &error {
            error if self.server_gone(&placement.server, error).await => {
                self.lose_server(&placement.server);
                Error::SlotLost(lease_id.to_owned())
            }
            slotbox_client::Error::Transport { .. } => Error::Upstream(error.to_string()),
            slotbox_client::Error::Api {
                code: ErrorCode::UnknownLease,
                ..
            } => {
                // Expired or reset on the server: the pool forgets it too.
                self.forget(lease_id);
                Error::UnknownLease(lease_id.to_owned())
            }
            _ => Error::from_server(error),
        }
    }

    /// Whether a failed call means its server is gone: it refused the connection, or the call
    /// broke and the scheduler says the server is not running, or the server then fails its
    /// health check too (a container's port proxy may outlive it by a moment, and the engine may
    /// report a killed container as running for a moment). A slow answer from a server that
    /// still passes its health check proves nothing and loses nothing.
    async fn server_gone(&self, server_id: &str, error: &slotbox_client::Error) -> bool {
        match error {
            slotbox_client::Error::Transport { source, .. } => {
                if source.is_connect() || !self.scheduler.is_alive(server_id).await {
                    return true;
                }
                let client = self
                    .state()
                    .servers
                    .iter()
                    .find(|server| server.handle.id == server_id)
                    .map(|server| server.client.clone());
                let Some(client) = client else {
                    // Already taken out by another call.
                    return true;
                };
                !matches!(
                    tokio::time::timeout(HEALTH_PROBE_TIMEOUT, client.health()).await,
                    Ok(Ok(_))
                )
            }
            slotbox_client::Error::Api { .. } | slotbox_client::Error::Protocol { .. } => false,
        }
    }

    /// Ends a lease on the pool's side and returns its slot.
    pub(crate) fn forget(&self, lease_id: &str) {
        let placement = self.state().leases.remove(lease_id);
        if let Some(placement) = placement {
            self.give_back(&placement.server);
        }
    }

    /// Takes a server out at once: its leases answer `slot_lost`, its free slots leave the pool.
    /// A replacement is started in the background.
    pub(crate) fn lose_server(&self, server_id: &str) {
        let mut state = self.state();
        let Some(index) = state
            .servers
            .iter()
            .position(|server| server.handle.id == server_id)
        else {
            return;
        };
        let server = state.servers.remove(index);
        let lost: Vec<String> = state
            .leases
            .iter()
            .filter(|(_, placement)| placement.server == server_id)
            .map(|(id, _)| id.clone())
            .collect();
        self.counters.servers_lost.inc();
        for lease in lost {
            self.counters.leases_lost.inc();
            state.leases.remove(&lease);
            state.lost.insert(lease, Gone::SlotLost);
        }
        drop(state);
        // Its free slots' permits leave the pool (those of leased slots were already taken).
        // Those held right now by acquires in progress become a debt, paid as they come back.
        let mut taken = 0;
        while taken < server.free {
            match self.permits.try_acquire() {
                Ok(permit) => {
                    permit.forget();
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        self.retire.fetch_add(server.free - taken, Ordering::AcqRel);
        tracing::warn!(
            server = server_id,
            "server lost; its leases answer slot_lost"
        );
        // What the dead server used (a stopped container, a failed allocation) is freed too.
        let scheduler = Arc::clone(&self.scheduler);
        let id = server_id.to_owned();
        self.stopping_tasks().spawn(async move {
            if let Err(error) = scheduler.stop_server(&id).await {
                tracing::warn!(server = id, %error, "could not clean up a lost server");
            }
        });
    }

    fn stopping_tasks(&self) -> MutexGuard<'_, tokio::task::JoinSet<()>> {
        self.stopping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until every lost server has been cleaned up.
    pub async fn settle(&self) {
        let mut tasks = std::mem::take(&mut *self.stopping_tasks());
        while tasks.join_next().await.is_some() {}
    }

    /// Starts a replacement for every lost server (call after `lose_server`).
    pub async fn replace_lost(self: &Arc<Self>, target_servers: usize) {
        while self.capacity().0 < target_servers {
            if let Err(error) = self.add_server().await {
                tracing::error!(%error, "could not start a replacement server");
                return;
            }
        }
    }

    /// Checks every server; the dead ones are taken out. Returns how many were lost.
    pub async fn check_servers(&self) -> usize {
        let ids: Vec<String> = self
            .state()
            .servers
            .iter()
            .map(|server| server.handle.id.clone())
            .collect();
        let mut lost = 0;
        for id in ids {
            if !self.scheduler.is_alive(&id).await {
                self.lose_server(&id);
                lost += 1;
            }
        }
        lost
    }

    /// Lets the scheduler prepare (reap what a crashed pool left, register a job); call once
    /// before the first `add_server`.
    pub async fn prepare(&self) -> Result<()> {
        self.scheduler.prepare().await
    }

    /// Stops every server (shutdown), then the scheduler's own shutdown. Waiting acquires are
    /// answered at once; commands running on the servers are killed by their servers, which
    /// answer those calls before they exit.
    pub async fn shutdown(&self) {
        {
            // Under the state lock, so a start finishing now either added its server before
            // (and is stopped below) or sees the flag (and stops it itself).
            let _state = self.state();
            self.shutting_down.store(true, Ordering::Release);
        }
        self.permits.close();
        if self.scheduler.shutdown_stops_servers() {
            // Stopping servers one by one would only make the scheduler replace them.
            self.state().servers.clear();
        }
        let ids: Vec<String> = self
            .state()
            .servers
            .drain(..)
            .map(|server| server.handle.id)
            .collect();
        // All at once: each stop may take its grace period.
        let stops = ids.iter().map(|id| async move {
            if let Err(error) = self.scheduler.stop_server(id).await {
                tracing::warn!(server = id, %error, "could not stop a server");
            }
        });
        futures_util::future::join_all(stops).await;
        // Starts in flight stop their own servers (they saw the flag); wait for them.
        loop {
            let done = self.starts_done.notified();
            if self.starting.load(Ordering::Acquire) == 0 {
                break;
            }
            done.await;
        }
        self.settle().await;
        if let Err(error) = self.scheduler.shutdown().await {
            tracing::warn!(%error, "the scheduler's shutdown failed");
        }
    }
}

/// The local instant of an RFC 3339 expiry from a server (a year ahead if unreadable, so a bad
/// timestamp never frees a slot early).
fn instant_of(expires_at: &str) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let remaining =
        time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|at| at - time::OffsetDateTime::now_utc())
            .and_then(|left| Duration::try_from(left).ok());
    match remaining {
        Some(left) => now + left,
        None if expires_at.is_empty() => now,
        None => now + Duration::from_secs(365 * 86_400),
    }
}
