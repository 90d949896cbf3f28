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
}

/// Supplies sandbox servers.
pub trait Scheduler: Send + Sync + std::fmt::Debug + 'static {
    /// The scheduler's name (`local`, `docker`, `nomad`).
    fn name(&self) -> &'static str;

    /// Starts one server and returns once it answers (readiness is the scheduler's job).
    fn start_server(&self) -> SchedulerFuture<'_, Result<ServerHandle>>;

    /// Stops a server and frees what it used.
    fn stop_server<'a>(&'a self, id: &'a str) -> SchedulerFuture<'a, Result<()>>;

    /// Whether the server still runs (a dead one's slots are lost).
    fn is_alive<'a>(&'a self, id: &'a str) -> SchedulerFuture<'a, bool>;
}
