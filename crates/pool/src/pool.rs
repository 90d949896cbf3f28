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
        })
    }

    /// Records a renewal's new expiry.
    pub(crate) fn renewed(&self, lease_id: &str, expires_at: &str) {
        if let Some(placement) = self.state().leases.get_mut(lease_id) {
            placement.expires_at = instant_of(expires_at);
        }
        self.expiry_changed.notify_one();
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

    /// (servers, total slots, free slots).
    pub fn capacity(&self) -> (usize, usize, usize) {
        let state = self.state();
        let total = state.servers.iter().map(|server| server.handle.slots).sum();
        let free = state.servers.iter().map(|server| server.free).sum();
        (state.servers.len(), total, free)
    }

    /// Leases a slot on some server, waiting first come, first served up to `wait`.
    pub async fn acquire(self: &Arc<Self>, request: &CreateLease, wait: Duration) -> Result<Lease> {
        let permit = tokio::time::timeout(wait, self.permits.acquire())
            .await
            .map_err(|_| Error::NoSlot(wait))?
            .map_err(|_| Error::Internal("pool semaphore closed".to_owned()))?;
        permit.forget();
        // The server with the most free slots spreads the load.
        let chosen = {
            let mut state = self.state();
            let best = state
                .servers
                .iter_mut()
                .filter(|server| server.free > 0)
                .max_by_key(|server| server.free);
            match best {
                Some(server) => {
                    server.free -= 1;
                    Some((server.handle.id.clone(), server.client.clone()))
                }
                None => None,
            }
        };
        let Some((server_id, client)) = chosen else {
            self.permits.add_permits(1);
            return Err(Error::Internal("a permit without a free slot".to_owned()));
        };
        let on_server = CreateLease {
            wait_s: Some(5.0),
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
                self.expiry_changed.notify_one();
                Ok(Lease {
                    lease_id: pool_lease,
                    slot_id,
                    expires_at: lease.expires_at,
                })
            }
            Err(error) => {
                self.give_back(&server_id);
                if matches!(error, slotbox_client::Error::Transport { .. }) {
                    self.lose_server(&server_id);
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
    pub(crate) fn after_error(
        &self,
        lease_id: &str,
        placement: &Placement,
        error: slotbox_client::Error,
    ) -> Error {
        match &error {
            slotbox_client::Error::Transport { .. } => {
                self.lose_server(&placement.server);
                Error::SlotLost(lease_id.to_owned())
            }
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
