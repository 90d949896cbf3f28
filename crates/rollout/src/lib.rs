//! slotbox's rollout engine: the agent loop against an OpenAI-compatible model server, with its
//! tools bound to slots leased from a sandbox server or pool.
//!
//! - [`task`]: the tasks file.
//! - [`engine`]: many rollouts at once, trajectories written as they finish.
//! - [`rollout`]: one rollout — lease, setup, loop, verify, release.
//! - [`agent`]: the loop itself and its invariants.
//! - [`model`]: chat-completions requests with retries; [`context`]: the prompt view that fits.
//! - [`tools`]: `terminal`, `read_file`, `write_file` over a lease.
//! - [`output`], [`summary`]: what a run writes and prints.
//!
//! Architecture invariant: talks to slots only through `slotbox-client` (HTTP), never through
//! the server or execution crates, so a rollout runs the same against one `slotbox serve`, a
//! local pool or a pool of thousands of slots elsewhere.

pub mod agent;
pub mod budget;
pub mod context;
pub mod engine;
pub mod error;
pub mod hermes_text;
pub mod message;
pub mod model;
pub mod output;
pub mod rollout;
pub mod summary;
pub mod task;
pub mod tools;

pub use error::Error;
pub use error::Result;
