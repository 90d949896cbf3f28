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

/// A server in the pool.
#[derive(Debug)]
struct Server {
    handle: ServerHandle,
    client: Client,
    /// Slots not held by a pool lease.
    free: usize,
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
        let handle = self.scheduler.start_server().await?;
        let mut client = Client::new(&handle.base_url);
        if let Some(token) = &self.token {
            client = client.with_token(token);
        }
        // Readiness: the server answers its health check before its slots are used.
        let health = client.health().await.map_err(|error| {
            Error::Scheduler(format!("server {} is not ready: {error}", handle.id))
        })?;
        tracing::info!(server = %handle.id, url = %handle.base_url, slots = health.slots, "server added");
        let slots = health.slots;
        self.state().servers.push(Server {
            handle,
            client,
            free: slots,
        });
        self.permits.add_permits(slots);
        Ok(())
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
            let permit = tokio::time::timeout_at(deadline, self.permits.acquire())
                .await
                .map_err(|_| Error::NoSlot(wait))?
                .map_err(|_| Error::Internal("pool semaphore closed".to_owned()))?;
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
                break (server.handle.id.clone(), server.client.clone());
            }
            // Its slot's server was lost meanwhile: that permit is gone with it; wait again.
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
                self.state().leases.insert(
                    pool_lease.clone(),
                    Placement {
                        server: server_id,
                        server_lease: lease.lease_id.clone(),
                        client,
                        expires_at: instant_of(&lease.expires_at),
                    },
                );
                claim.server = None;
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
            drop(state);
            self.permits.add_permits(1);
        }
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
    /// broke and the scheduler confirms the server is not running. A slow answer or a cut-off
    /// body from a running server proves nothing and loses nothing.
    async fn server_gone(&self, server_id: &str, error: &slotbox_client::Error) -> bool {
        match error {
            slotbox_client::Error::Transport { source, .. } => {
                source.is_connect() || !self.scheduler.is_alive(server_id).await
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
        for lease in lost {
            state.leases.remove(&lease);
            state.lost.insert(lease, Gone::SlotLost);
        }
        drop(state);
        // Its free slots' permits leave the pool (those of leased slots were already taken).
        if let Ok(permits) = self
            .permits
            .try_acquire_many(u32::try_from(server.free).unwrap_or(u32::MAX))
        {
            permits.forget();
        }
        tracing::warn!(
            server = server_id,
            "server lost; its leases answer slot_lost"
        );
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

    /// Stops every server (shutdown).
    pub async fn shutdown(&self) {
        let ids: Vec<String> = self
            .state()
            .servers
            .drain(..)
            .map(|server| server.handle.id)
            .collect();
        for id in ids {
            if let Err(error) = self.scheduler.stop_server(&id).await {
                tracing::warn!(server = id, %error, "could not stop a server");
            }
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
