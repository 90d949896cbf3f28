//! The local scheduler: sandbox servers as `slotbox serve` child processes of the pool, on this
//! host. The embedded default: no Docker, no Nomad. Children die with the pool: the pool's
//! shutdown stops them with SIGTERM so they kill their slots' commands, and when the pool dies
//! without one (SIGKILL, a crash) the pipe it holds on each child's stdin closes, which the child
//! (`--stop-when-stdin-closes`) takes as the same stop. `kill_on_drop` covers a pool dropped
//! without shutting down.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;

use tokio::io::AsyncBufReadExt;

use crate::Error;
use crate::Result;
use crate::scheduler::Scheduler;
use crate::scheduler::SchedulerFuture;
use crate::scheduler::ServerHandle;

/// How to start local servers.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The `slotbox` binary.
    pub binary: PathBuf,
    /// Slots per server.
    pub slots_per_server: usize,
    /// Extra arguments for `slotbox serve` (isolation, limits).
    pub serve_args: Vec<String>,
}

/// Starts `slotbox serve` children.
#[derive(Debug)]
pub struct LocalScheduler {
    config: LocalConfig,
    /// Server data directories live here and go with the scheduler.
    data_root: tempfile::TempDir,
    children: Mutex<HashMap<String, tokio::process::Child>>,
    next: std::sync::atomic::AtomicU64,
}

impl LocalScheduler {
    /// A scheduler with `config`.
    pub fn new(config: LocalConfig) -> Result<Self> {
        let data_root = tempfile::Builder::new()
            .prefix("slotbox-pool-")
            .tempdir()
            .map_err(|source| {
                Error::Scheduler(format!("creating the pool's data directory: {source}"))
            })?;
        Ok(Self {
            config,
            data_root,
            children: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Where the servers' data directories are (their command lines name it).
    pub fn data_root(&self) -> &std::path::Path {
        self.data_root.path()
    }

    /// The process id of server `id` (for operators and fault tests).
    pub fn server_pid(&self, id: &str) -> Option<u32> {
        self.children().get(id).and_then(tokio::process::Child::id)
    }

    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::process::Child>> {
        self.children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn start(&self) -> Result<ServerHandle> {
        let number = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("local-{number}");
        // A token of its own: the server's loopback port must not be a way around the pool's
        // authentication (or into another pool's slots) for other local users.
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut child = tokio::process::Command::new(&self.config.binary)
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--slots"])
            .arg(self.config.slots_per_server.to_string())
            .arg("--data-dir")
            .arg(self.data_root.path().join(&id))
            .args(&self.config.serve_args)
            .arg("--stop-when-stdin-closes")
            // In the environment, not the command line (`ps` shows command lines); this also
            // replaces the pool's own token, which is for the pool's clients.
            .env("SLOTBOX_TOKEN", &token)
            // The lifeline: never written to; `Child` keeps the write end (close-on-exec, so no
            // other child holds it) until the server is stopped or the pool dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| {
                Error::Scheduler(format!(
                    "starting {}: {source}",
                    self.config.binary.display()
                ))
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Scheduler("no stdout from slotbox serve".to_owned()))?;
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(stdout);
        let read = reader.read_line(&mut line);
        // The server prints its address once its slots are ready (or exits saying why).
        match tokio::time::timeout(std::time::Duration::from_secs(60), read).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                let _ = child.start_kill();
                return Err(Error::Scheduler(format!(
                    "slotbox serve ({id}) did not start; see its error above"
                )));
            }
        }
        let base_url = line
            .trim()
            .strip_prefix("slotbox serve: listening on ")
            .ok_or_else(|| {
                Error::Scheduler(format!("unexpected output from slotbox serve: {line:?}"))
            })?
            .to_owned();
        self.children().insert(id.clone(), child);
        Ok(ServerHandle {
            id,
            base_url,
            slots: self.config.slots_per_server,
            token: Some(token),
        })
    }

    async fn stop(&self, id: &str) -> Result<()> {
        let child = self.children().remove(id);
        if let Some(mut child) = child {
            // Held until the server is gone: `wait` would close it first, and the server would
            // take that for its parent's death (and say so) while it handles the SIGTERM.
            let _lifeline = child.stdin.take();
            if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                // SIGTERM: the server kills its slots' commands before it exits.
                let _ = nix_kill(pid);
            }
            let graceful =
                tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await;
            if graceful.is_err() {
                let _ = child.kill().await;
            }
        }
        Ok(())
    }

    async fn alive(&self, id: &str) -> bool {
        let mut children = self.children();
        let running = match children.get_mut(id) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        };
        if !running {
            children.remove(id);
        }
        running
    }
}

fn nix_kill(pid: i32) -> nix::Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
}

impl Scheduler for LocalScheduler {
    fn name(&self) -> &'static str {
        "local"
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
}
