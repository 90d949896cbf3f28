//! slotbox's execution core: run one bash command per call in a backend and return one result.
//!
//! Entry points: `Session` (cwd, exports, functions and aliases persist between calls) and
//! `exec_once` (no state). Both take an `ExecRequest` and return a
//! `slotbox_protocol::ExecResult`: exit code, merged output (bounded, head/tail), timeout (124) and
//! interrupt (130) semantics as hermes-agent's terminal tool defines them.
//!
//! Layers, bottom up: `output` (decoding, bounded capture) → `plan` + `backend` (pure: what process
//! to start) → `spawn` (the only code that starts processes) → `session`.
//!
//! Architecture invariant: this crate knows nothing about HTTP or any wire format beyond the
//! protocol crate's plain types; its API is async functions, and it assumes only that it runs
//! inside a tokio runtime.

pub mod agent;
pub mod backend;
pub mod cgroup;
mod env;
mod error;
pub mod fs;
mod limits;
mod output;
pub mod plan;
pub mod probe;
mod session;
mod spawn;

pub use backend::AgentCommand;
pub use backend::ApptainerConfig;
pub use backend::Backend;
pub use backend::BubblewrapConfig;
pub use backend::DockerConfig;
pub use backend::Network;
pub use backend::SandboxLimits;
pub use backend::SshConfig;
pub use cgroup::CgroupLayout;
pub use cgroup::CgroupLimits;
pub use env::DEFAULT_ALLOW;
pub use env::DEFAULT_PATH;
pub use env::EnvPolicy;
pub use error::Error;
pub use error::Result;
pub use limits::Interrupt;
pub use limits::StallTimeout;
pub use limits::Timeout;
pub use output::OutputCap;
pub use session::ExecRequest;
pub use session::Session;
pub use session::SessionConfig;
pub use session::exec_once;
pub use spawn::DRAIN_AFTER_EXIT;
pub use spawn::KILL_GRACE;
pub use spawn::Streams;
