//! Schedulers: where sandbox servers come from. The pool asks for servers and gives them back;
//! how they run (a local process, a container, a Nomad allocation) is the scheduler's business.

use std::future::Future;
use std::pin::Pin;

use crate::Result;

/// A future a scheduler returns (boxed, so schedulers can be used as trait objects).
pub type SchedulerFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A running sandbox server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHandle {
    /// The scheduler's name for it.
    pub id: String,
    /// Where its API is (`http://127.0.0.1:PORT`).
    pub base_url: String,
    /// How many slots it serves.
    pub slots: usize,
    /// The bearer token the server requires, if the scheduler gave it one (a server that
    /// listens beyond loopback, e.g. in a container, must have one).
    pub token: Option<String>,
}

/// Supplies sandbox servers.
pub trait Scheduler: Send + Sync + std::fmt::Debug + 'static {
    /// The scheduler's name (`local`, `docker`, `nomad`).
    fn name(&self) -> &'static str;

    /// Prepares the scheduler before the first server: e.g. reaps what a crashed earlier pool
    /// left behind, or registers a job. The default does nothing.
    fn prepare(&self) -> SchedulerFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Starts one server and returns once it answers (readiness is the scheduler's job).
    fn start_server(&self) -> SchedulerFuture<'_, Result<ServerHandle>>;

    /// Stops a server and frees what it used: a dead or broken one, or every server at shutdown.
    /// A scheduler that replaces failed servers by itself (Nomad) may start a replacement,
    /// which a later `start_server` hands out.
    fn stop_server<'a>(&'a self, id: &'a str) -> SchedulerFuture<'a, Result<()>>;

    /// Gives back an idle, healthy server the pool no longer needs (scaling down): unlike
    /// `stop_server`, nothing replaces it. The default stops it.
    fn retire_server<'a>(&'a self, id: &'a str) -> SchedulerFuture<'a, Result<()>> {
        self.stop_server(id)
    }

    /// Which of the `idle` servers (oldest first) to retire when scaling down, or none if the
    /// scheduler cannot retire any of them without hitting a busy one (Nomad chooses which
    /// allocation a smaller count stops). The default: the newest.
    fn pick_retiree(&self, idle: &[String]) -> Option<String> {
        idle.last().cloned()
    }

    /// Whether the server still runs (a dead one's slots are lost).
    fn is_alive<'a>(&'a self, id: &'a str) -> SchedulerFuture<'a, bool>;

    /// Whether `shutdown` stops every server itself (Nomad: deregistering the job stops its
    /// allocations, each with its grace period), so the pool need not stop them one by one,
    /// which would only make the scheduler place replacements. The default: no.
    fn shutdown_stops_servers(&self) -> bool {
        false
    }

    /// Called once when the pool shuts down, after every server was stopped (e.g. deregisters
    /// a job). The default does nothing.
    fn shutdown(&self) -> SchedulerFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}
