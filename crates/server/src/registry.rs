//! The slot registry: owns every slot and lease, and is the only place their state changes.
//!
//! Invariants:
//! - A slot is in exactly one of: free (in `free`, with one semaphore permit), leased (one entry in
//!   `leases`), resetting, or quarantined (its reset failed; never handed out again).
//! - The semaphore's permits equal the free slots, and tokio's semaphore is fair, so clients waiting
//!   for a slot are served first come, first served.
//! - Commands of one slot run one at a time (`Slot::shell` lock); a lease is re-checked after the
//!   lock is taken, so a command never runs in a slot that was released while it waited.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;

use slotbox_exec::Backend;
use slotbox_exec::ExecRequest;
use slotbox_exec::Interrupt;
use slotbox_exec::Network;
use slotbox_exec::Session;
use slotbox_exec::SessionConfig;
use slotbox_protocol::ExecResult;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::Isolation;
use crate::config::ServerConfig;
use crate::error::Error;
use crate::error::Result;

/// One isolated workspace and the shell session running in it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) id: String,
    pub(crate) workspace: PathBuf,
    /// The slot's session (started at its first stateful command, dropped at reset). Held for the
    /// whole of any command, which serializes the slot's commands.
    shell: tokio::sync::Mutex<Option<SlotShell>>,
    /// The running command's interrupt handle.
    running: Mutex<Option<Interrupt>>,
    /// While a command runs: the caller's execution id (seed API), for `GET /slots`.
    busy: Mutex<Option<serde_json::Value>>,
}

/// A slot's session and the network setting it was started with.
#[derive(Debug)]
struct SlotShell {
    session: Session,
    network: bool,
}

/// How a command runs in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunMode {
    /// A fresh shell, nothing carried over (the seed's `bash` tool).
    OneShot {
        /// Network access for this command.
        network: bool,
    },
    /// In the slot's session (v1 exec, the seed's `bash_stateful`); a different network setting
    /// than the running session's restarts the session.
    Session {
        /// Network access for the session.
        network: bool,
    },
}

/// What `GET /slots` reports of a slot.
#[derive(Debug, Clone)]
pub(crate) struct SlotStatus {
    pub(crate) id: String,
    pub(crate) workspace: PathBuf,
    /// `Some(execution id)` while a command runs.
    pub(crate) busy: Option<serde_json::Value>,
}

/// A lease's bookkeeping.
#[derive(Debug, Clone)]
struct LeaseEntry {
    slot: usize,
    ttl: Duration,
    expires_at: Instant,
    expires_wall: OffsetDateTime,
    network: bool,
}

/// Slot counts for health reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Occupancy {
    pub(crate) free: usize,
    pub(crate) leased: usize,
    pub(crate) quarantined: Vec<String>,
}

/// Owns slots and leases.
#[derive(Debug)]
pub(crate) struct Registry {
    config: Arc<ServerConfig>,
    slots: Vec<Arc<Slot>>,
    free: Mutex<VecDeque<usize>>,
    permits: Semaphore,
    leases: Mutex<HashMap<String, LeaseEntry>>,
    quarantined: Mutex<Vec<usize>>,
    /// Wakes the reaper when the earliest expiry may have changed.
    reaper_wake: Notify,
    pub(crate) metrics: crate::metrics::Metrics,
}

/// A granted lease.
#[derive(Debug, Clone)]
pub(crate) struct Granted {
    pub(crate) lease_id: String,
    pub(crate) slot_id: String,
    pub(crate) expires_at: OffsetDateTime,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short critical sections leaves consistent data (each
    // section is a single insert/remove), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// Creates the data directory and `config.slots` empty workspaces (emptying leftovers of a
    /// previous run).
    pub(crate) fn new(config: Arc<ServerConfig>) -> Result<Arc<Self>> {
        let setup = |path: &std::path::Path| {
            let path = path.to_owned();
            move |source| Error::Setup { path, source }
        };
        std::fs::create_dir_all(&config.data_dir).map_err(setup(&config.data_dir))?;
        // Only the server's user may enter: a slot's files (a command may leave a setuid
        // binary owned by the server's user there) are nobody else's business on this host.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(setup(&config.data_dir))?;
        }
        let trash = config.data_dir.join(".trash");
        // A previous run's trash moves aside whole, so its removal never races a reset that is
        // renaming a workspace into `.trash`.
        if trash.exists() {
            let old = config
                .data_dir
                .join(format!(".trash-{}", uuid::Uuid::new_v4().simple()));
            std::fs::rename(&trash, &old).map_err(setup(&trash))?;
            spawn_removal(old);
        }
        let mut slots = Vec::with_capacity(config.slots);
        for index in 0..config.slots {
            let workspace = config.data_dir.join(format!("slot_{index}"));
            let trashed =
                slotbox_exec::fs::swap_for_empty(&workspace, &trash).map_err(setup(&workspace))?;
            if let Some(trashed) = trashed {
                spawn_removal(trashed);
            }
            slots.push(Arc::new(Slot {
                id: format!("slot_{index}"),
                workspace,
                shell: tokio::sync::Mutex::new(None),
                running: Mutex::new(None),
                busy: Mutex::new(None),
            }));
        }
        Ok(Arc::new(Self {
            permits: Semaphore::new(config.slots),
            free: Mutex::new((0..config.slots).collect()),
            config,
            slots,
            leases: Mutex::new(HashMap::new()),
            quarantined: Mutex::new(Vec::new()),
            reaper_wake: Notify::new(),
            metrics: crate::metrics::Metrics::new(),
        }))
    }

    pub(crate) fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub(crate) fn occupancy(&self) -> Occupancy {
        let quarantined = lock(&self.quarantined)
            .iter()
            .map(|index| self.slots[*index].id.clone())
            .collect();
        Occupancy {
            free: lock(&self.free).len(),
            leased: lock(&self.leases).len(),
            quarantined,
        }
    }

    /// Waits (first come, first served) up to `wait` for a free slot and leases it.
    pub(crate) async fn acquire(
        &self,
        ttl: Duration,
        wait: Duration,
        network: bool,
    ) -> Result<Granted> {
        let deadline = Instant::now() + wait;
        let slot = loop {
            let permit = tokio::time::timeout_at(deadline, self.permits.acquire())
                .await
                .map_err(|_elapsed| {
                    self.metrics.lease_waits_timed_out.inc();
                    Error::NoSlot(wait)
                })?
                .map_err(|_closed| Error::Internal("slot semaphore closed".to_owned()))?;
            permit.forget();
            let Some(slot) = lock(&self.free).pop_front() else {
                self.permits.add_permits(1);
                return Err(Error::Internal("a permit without a free slot".to_owned()));
            };
            // A free slot whose reset (through the seed API) failed leaves service here.
            if !lock(&self.quarantined).contains(&slot) {
                break slot;
            }
        };
        let lease_id = uuid::Uuid::new_v4().simple().to_string();
        let (expires_at, expires_wall) = expiry(ttl);
        lock(&self.leases).insert(
            lease_id.clone(),
            LeaseEntry {
                slot,
                ttl,
                expires_at,
                expires_wall,
                network,
            },
        );
        self.reaper_wake.notify_one();
        self.metrics.leases_granted.inc();
        tracing::info!(lease_id, slot_id = %self.slots[slot].id, "lease granted");
        Ok(Granted {
            lease_id,
            slot_id: self.slots[slot].id.clone(),
            expires_at: expires_wall,
        })
    }

    /// A live lease, or `UnknownLease` (also for one that expired and awaits the reaper).
    /// Starts the leased slot's session (its sandbox) in the background, so it is ready by the
    /// lease's first command: an agent's client usually asks its model before its first
    /// command, and a sandbox start (tens of milliseconds idle, seconds when hundreds start at
    /// once) then costs the rollout nothing. A command that comes first simply starts it itself
    /// (it holds the slot's shell lock); a failure here is left for that command to report.
    pub(crate) fn start_early(self: &Arc<Self>, lease_id: &str) {
        let Ok(entry) = self.live_lease(lease_id) else {
            return;
        };
        let registry = Arc::clone(self);
        let lease_id = lease_id.to_owned();
        tokio::spawn(async move {
            let slot = Arc::clone(&registry.slots[entry.slot]);
            let mut shell = slot.shell.lock().await;
            // Released (maybe re-leased) meanwhile, or already started: leave the slot alone.
            match registry.live_lease(&lease_id) {
                Ok(current) if current.slot == entry.slot && shell.is_none() => {}
                _ => return,
            }
            match Session::start(registry.session_config(&slot, entry.network)).await {
                Ok(session) => {
                    *shell = Some(SlotShell {
                        session,
                        network: entry.network,
                    });
                }
                Err(error) => {
                    tracing::debug!(lease_id, %error, "early sandbox start failed; the first command retries");
                }
            }
        });
    }

    fn live_lease(&self, lease_id: &str) -> Result<LeaseEntry> {
        let leases = lock(&self.leases);
        match leases.get(lease_id) {
            Some(entry) if entry.expires_at > Instant::now() => Ok(entry.clone()),
            _ => Err(Error::UnknownLease(lease_id.to_owned())),
        }
    }

    /// Extends a lease by `ttl` from now (default: its original ttl).
    pub(crate) fn renew(&self, lease_id: &str, ttl: Option<Duration>) -> Result<Granted> {
        let mut leases = lock(&self.leases);
        let entry = leases
            .get_mut(lease_id)
            .filter(|entry| entry.expires_at > Instant::now())
            .ok_or_else(|| Error::UnknownLease(lease_id.to_owned()))?;
        if let Some(ttl) = ttl {
            entry.ttl = ttl;
        }
        (entry.expires_at, entry.expires_wall) = expiry(entry.ttl);
        let granted = Granted {
            lease_id: lease_id.to_owned(),
            slot_id: self.slots[entry.slot].id.clone(),
            expires_at: entry.expires_wall,
        };
        drop(leases);
        self.reaper_wake.notify_one();
        Ok(granted)
    }

    /// `Ok` for a live lease.
    pub(crate) fn check_lease(&self, lease_id: &str) -> Result<()> {
        self.live_lease(lease_id).map(|_| ())
    }

    /// The workspace of a live lease (for the files API), opened while the lease is checked: the
    /// handle stays on this lease's directory even if the slot is reset and leased again.
    pub(crate) fn workspace_dir(&self, lease_id: &str) -> Result<cap_std::fs::Dir> {
        let leases = lock(&self.leases);
        match leases.get(lease_id) {
            Some(entry) if entry.expires_at > Instant::now() => {
                crate::files::open_workspace(&self.slots[entry.slot].workspace)
            }
            _ => Err(Error::UnknownLease(lease_id.to_owned())),
        }
    }

    /// Runs a command in the lease's session.
    pub(crate) async fn exec(&self, lease_id: &str, request: ExecRequest) -> Result<ExecResult> {
        let entry = self.live_lease(lease_id)?;
        let slot = Arc::clone(&self.slots[entry.slot]);
        let shell = slot.shell.lock().await;
        let mode = RunMode::Session {
            network: entry.network,
        };
        self.run_locked(&slot, shell, request, mode, serde_json::Value::Null, || {
            // Released (and maybe re-leased) while this call waited for the slot?
            match self.live_lease(lease_id) {
                Ok(current) if current.slot == entry.slot => Ok(()),
                _ => Err(Error::UnknownLease(lease_id.to_owned())),
            }
        })
        .await
    }

    /// The index of slot `slot_id`.
    pub(crate) fn slot_index(&self, slot_id: &str) -> Option<usize> {
        self.slots.iter().position(|slot| slot.id == slot_id)
    }

    /// The workspace of slot `index`.
    pub(crate) fn slot_workspace(&self, index: usize) -> PathBuf {
        self.slots[index].workspace.clone()
    }

    /// Every slot's state, in slot order.
    pub(crate) fn slot_statuses(&self) -> Vec<SlotStatus> {
        self.slots
            .iter()
            .map(|slot| SlotStatus {
                id: slot.id.clone(),
                workspace: slot.workspace.clone(),
                busy: lock(&slot.busy).clone(),
            })
            .collect()
    }

    /// Runs a command in slot `index` directly, without a lease (the seed API), after the slot's
    /// earlier commands.
    pub(crate) async fn run_in_slot(
        &self,
        index: usize,
        request: ExecRequest,
        mode: RunMode,
        execution_id: serde_json::Value,
    ) -> Result<ExecResult> {
        let slot = Arc::clone(&self.slots[index]);
        let shell = slot.shell.lock().await;
        self.run_locked(&slot, shell, request, mode, execution_id, || Ok(()))
            .await
    }

    /// Runs a command while holding the slot's shell lock. `still_allowed` is checked after the
    /// command's interrupt handle is published, so a release that missed the handle is seen here
    /// (and one that comes later finds the handle and interrupts).
    async fn run_locked(
        &self,
        slot: &Slot,
        mut shell: tokio::sync::MutexGuard<'_, Option<SlotShell>>,
        mut request: ExecRequest,
        mode: RunMode,
        execution_id: serde_json::Value,
        still_allowed: impl FnOnce() -> Result<()>,
    ) -> Result<ExecResult> {
        // The caller's own handle when it has one (a stream interrupts exactly its command).
        let interrupt = request.interrupt.clone().unwrap_or_default();
        request.interrupt = Some(interrupt.clone());
        *lock(&slot.running) = Some(interrupt);
        *lock(&slot.busy) = Some(execution_id);
        // Cleared however the call ends, including when this future is dropped (client gone).
        let _clear = ClearRunning(slot);
        still_allowed()?;
        let result = self.run_mode(slot, &mut shell, &request, mode).await;
        if matches!(result, Err(Error::Exec(slotbox_exec::Error::SandboxGone))) {
            // Its sandbox died (killed from inside, out of memory): the next call starts afresh.
            tracing::warn!(slot_id = %slot.id, "slot sandbox gone; its session will be restarted");
            *shell = None;
        }
        self.metrics.command(&result);
        result
    }

    async fn run_mode(
        &self,
        slot: &Slot,
        shell: &mut Option<SlotShell>,
        request: &ExecRequest,
        mode: RunMode,
    ) -> Result<ExecResult> {
        match mode {
            RunMode::OneShot { network } => {
                // In the slot's long-lived sandbox when its network setting matches (or there is
                // none yet); a one-off with other network access gets a sandbox of its own.
                if shell
                    .as_ref()
                    .is_some_and(|current| current.network != network)
                {
                    let config = self.session_config(slot, network);
                    return Ok(slotbox_exec::exec_once(&config, request).await?);
                }
                let current = self.ensure_shell(slot, shell, network).await?;
                Ok(current.session.exec_stateless(request).await?)
            }
            RunMode::Session { network } => {
                if shell
                    .as_ref()
                    .is_some_and(|current| current.network != network)
                {
                    *shell = None;
                }
                if shell.is_none() {
                    let session = Session::start(self.session_config(slot, network)).await?;
                    *shell = Some(SlotShell { session, network });
                }
                let Some(current) = shell.as_mut() else {
                    return Err(Error::Internal("session missing after start".to_owned()));
                };
                Ok(current.session.exec(request).await?)
            }
        }
    }

    /// The slot's session, started (with `network`) if there is none.
    async fn ensure_shell<'s>(
        &self,
        slot: &Slot,
        shell: &'s mut Option<SlotShell>,
        network: bool,
    ) -> Result<&'s mut SlotShell> {
        if shell.is_none() {
            let session = Session::start(self.session_config(slot, network)).await?;
            *shell = Some(SlotShell { session, network });
        }
        shell
            .as_mut()
            .ok_or_else(|| Error::Internal("session missing after start".to_owned()))
    }

    /// Empties slot `index` (the seed API's reset): kills its command, drops its session, swaps
    /// in an empty workspace. A failure quarantines the slot.
    pub(crate) async fn reset_slot(&self, index: usize) -> Result<()> {
        let slot = Arc::clone(&self.slots[index]);
        if let Some(interrupt) = lock(&slot.running).clone() {
            interrupt.trigger();
        }
        let mut shell = slot.shell.lock().await;
        *shell = None;
        match self.swap_workspace(&slot).await {
            Ok(()) => Ok(()),
            Err(why) => {
                self.quarantine(index, &why);
                Err(Error::Internal(why))
            }
        }
    }

    async fn swap_workspace(&self, slot: &Slot) -> std::result::Result<(), String> {
        let trash = self.config.data_dir.join(".trash");
        let workspace = slot.workspace.clone();
        let swapped = tokio::task::spawn_blocking(move || {
            slotbox_exec::fs::swap_for_empty(&workspace, &trash)
        })
        .await;
        match swapped {
            Ok(Ok(trashed)) => {
                if let Some(trashed) = trashed {
                    spawn_removal(trashed);
                }
                Ok(())
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(join_error) => Err(join_error.to_string()),
        }
    }

    /// Interrupts the lease's running command, if any.
    pub(crate) fn interrupt(&self, lease_id: &str) -> Result<bool> {
        let entry = self.live_lease(lease_id)?;
        let running = lock(&self.slots[entry.slot].running).clone();
        Ok(match running {
            Some(interrupt) => {
                interrupt.trigger();
                true
            }
            None => false,
        })
    }

    /// Ends a lease at its client's request.
    pub(crate) async fn release(&self, lease_id: &str) -> Result<String> {
        let slot_id = self.end_lease(lease_id).await?;
        self.metrics.leases_released.inc();
        Ok(slot_id)
    }

    /// Ends a lease: kills its command, resets the slot and frees it.
    async fn end_lease(&self, lease_id: &str) -> Result<String> {
        let entry = lock(&self.leases)
            .remove(lease_id)
            .ok_or_else(|| Error::UnknownLease(lease_id.to_owned()))?;
        self.reaper_wake.notify_one();
        let slot_id = self.slots[entry.slot].id.clone();
        self.reset_and_free(entry.slot).await;
        tracing::info!(lease_id, slot_id, "lease released");
        Ok(slot_id)
    }

    async fn reset_and_free(&self, index: usize) {
        let slot = Arc::clone(&self.slots[index]);
        if let Some(interrupt) = lock(&slot.running).clone() {
            interrupt.trigger();
        }
        // Waits for the interrupted command to be gone (bounded by the kill grace).
        let mut shell = slot.shell.lock().await;
        // Dropping the session removes its state and /tmp.
        *shell = None;
        match self.swap_workspace(&slot).await {
            Ok(()) => {
                drop(shell);
                lock(&self.free).push_back(index);
                self.permits.add_permits(1);
            }
            Err(why) => self.quarantine(index, &why),
        }
    }

    fn quarantine(&self, index: usize, why: &str) {
        tracing::error!(slot_id = %self.slots[index].id, why, "slot reset failed; slot quarantined");
        let mut quarantined = lock(&self.quarantined);
        if !quarantined.contains(&index) {
            quarantined.push(index);
        }
    }

    /// Whether the server enforces isolation (for the seed API's health and metadata).
    pub(crate) fn sandboxed(&self) -> bool {
        matches!(
            self.config.isolation,
            Isolation::Bubblewrap(_) | Isolation::Docker(_)
        )
    }

    fn session_config(&self, slot: &Slot, network: bool) -> SessionConfig {
        let backend = match &self.config.isolation {
            Isolation::Bubblewrap(config) => {
                let mut config = config.clone();
                config.network = if network { Network::On } else { Network::Off };
                Backend::Bubblewrap(config)
            }
            Isolation::Docker(config) => {
                let mut config = config.clone();
                config.network = if network { Network::On } else { Network::Off };
                Backend::Docker(config)
            }
            Isolation::None => Backend::Local,
        };
        SessionConfig::new(backend, slot.workspace.clone())
    }

    /// Expires leases as their time comes: resets their slots and frees them. Runs until the
    /// registry is dropped.
    pub(crate) async fn reap(self: Arc<Self>) {
        loop {
            let now = Instant::now();
            let (expired, next): (Vec<String>, Option<Instant>) = {
                let leases = lock(&self.leases);
                let expired = leases
                    .iter()
                    .filter(|(_, entry)| entry.expires_at <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                let next = leases
                    .values()
                    .map(|entry| entry.expires_at)
                    .filter(|at| *at > now)
                    .min();
                (expired, next)
            };
            for lease_id in expired {
                tracing::info!(lease_id, "lease expired");
                let registry = Arc::clone(&self);
                tokio::spawn(async move {
                    // Already released by its client in the meantime: nothing to do.
                    if registry.end_lease(&lease_id).await.is_ok() {
                        registry.metrics.leases_expired.inc();
                    }
                });
            }
            let far = now + Duration::from_secs(3600);
            tokio::select! {
                () = tokio::time::sleep_until(next.unwrap_or(far)) => {}
                () = self.reaper_wake.notified() => {}
            }
        }
    }

    /// Kills every running command (shutdown).
    pub(crate) fn interrupt_all(&self) {
        for slot in &self.slots {
            if let Some(interrupt) = lock(&slot.running).clone() {
                interrupt.trigger();
            }
        }
    }
}

struct ClearRunning<'a>(&'a Slot);

impl Drop for ClearRunning<'_> {
    fn drop(&mut self) {
        *lock(&self.0.running) = None;
        *lock(&self.0.busy) = None;
    }
}

fn expiry(ttl: Duration) -> (Instant, OffsetDateTime) {
    (Instant::now() + ttl, OffsetDateTime::now_utc() + ttl)
}

/// Deletes a trashed tree off the async threads; failures are logged (the slot is already clean).
fn spawn_removal(path: PathBuf) {
    // Outside a runtime (unit tests of setup) there is nothing to spawn on; the trash is then
    // removed at the next start.
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::task::spawn_blocking(move || {
        if let Err(error) = slotbox_exec::fs::remove_tree(&path) {
            tracing::warn!(path = %path.display(), %error, "could not delete a reset workspace");
        }
    });
}
