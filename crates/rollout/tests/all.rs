//! The rollout engine end to end: the fake model server scripts the model's side and checks
//! every request; real bubblewrap slots (an in-process sandbox server) run the tools.

// Test helpers outside #[test] functions: a failed setup step should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
