//! The execution core's integration tests, against real bash and real bubblewrap.
//!
//! One test binary (faster to link), one module per concern. Every behaviour runs on every
//! backend available (local, bubblewrap per call and with its agent, docker) through
//! `suite::backends()`, so none can drift from the contract.

// Test helpers outside #[test] functions: a failed setup step should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
