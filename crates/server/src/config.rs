//! Server settings, resolved by the caller (the CLI) before the server starts.

use std::path::PathBuf;
use std::time::Duration;

/// How a slot's commands are isolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// Each slot's commands run in bubblewrap sandboxes that see only that slot's workspace.
    Bubblewrap(slotbox_exec::BubblewrapConfig),
    /// Each slot's session runs in a container of its own (the docker backend), which sees only
    /// that slot's workspace; the container's limits are the slot's.
    Docker(slotbox_exec::DockerConfig),
    /// No isolation: commands run on the host (asked for explicitly, never a fallback).
    None,
}

impl Isolation {
    /// The name `/v1/health` reports.
    pub fn name(&self) -> &'static str {
        match self {
            Isolation::Bubblewrap(_) => "bwrap",
            Isolation::Docker(_) => "docker",
            Isolation::None => "none",
        }
    }
}

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Number of slots (`slot_0`…).
    pub slots: usize,
    /// Where slot workspaces live (`<data_dir>/slot_N`).
    pub data_dir: PathBuf,
    /// Isolation of slot commands.
    pub isolation: Isolation,
    /// Bearer token required on every route but `/v1/health`; `None`: no auth (loopback only).
    pub token: Option<String>,
    /// Limits on requests.
    pub limits: Limits,
}

/// Request limits and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request body (JSON or file upload).
    pub max_body_bytes: usize,
    /// Default and largest command timeout.
    pub default_timeout: Duration,
    /// Largest accepted command timeout.
    pub max_timeout: Duration,
    /// Largest accepted output cap.
    pub max_output_chars: u64,
    /// Default lease lifetime.
    pub default_ttl: Duration,
    /// Largest lease lifetime.
    pub max_ttl: Duration,
    /// Default wait for a free slot.
    pub default_wait: Duration,
    /// Largest wait for a free slot.
    pub max_wait: Duration,
    /// Largest file the files API returns.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            default_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(24 * 3600),
            max_output_chars: 10_000_000,
            default_ttl: Duration::from_secs(600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            default_wait: Duration::from_secs(30),
            max_wait: Duration::from_secs(3600),
            max_file_bytes: 64 * 1024 * 1024,
        }
    }
}
