//! Every environment variable slotbox reads, declared once.
//!
//! Settings resolve as command line > environment > built-in default (config files arrive with the
//! backend selection work). clap's `env = …` attributes name these constants, so `--help` lists
//! each variable beside its flag.

/// Default backend of `slotbox exec` (`local` or `bwrap`).
pub(crate) const SLOTBOX_BACKEND: &str = "SLOTBOX_BACKEND";
/// The bubblewrap binary to use instead of the first `bwrap` on `PATH`.
pub(crate) const SLOTBOX_BWRAP: &str = "SLOTBOX_BWRAP";
/// Log filter for slotbox's own diagnostics on stderr (tracing `EnvFilter` syntax).
pub(crate) const SLOTBOX_LOG: &str = "SLOTBOX_LOG";
/// Bearer token of `slotbox serve` (so it stays out of `ps` output).
pub(crate) const SLOTBOX_TOKEN: &str = "SLOTBOX_TOKEN";
/// Set by Nomad inside an allocation: `slotbox serve` keeps its data under `$NOMAD_ALLOC_DIR/data`.
pub(crate) const NOMAD_ALLOC_DIR: &str = "NOMAD_ALLOC_DIR";
