//! The execution core's integration tests, against real bash and real bubblewrap.
//!
//! One test binary (faster to link), one module per concern. Every behaviour runs on both the local
//! and the bubblewrap backend through `suite::backends()`, so neither can drift from the contract.

// Test helpers outside #[test] functions: a failed setup step should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
