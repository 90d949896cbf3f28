//! The sandbox server's integration tests: the real router, real bash, real bubblewrap.

// Test helpers outside #[test] functions: a failed setup step should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
