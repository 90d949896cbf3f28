//! The execution core's one error type.
//!
//! A command that runs and fails is not an error: it is an `ExecResult` with its exit code. Errors are
//! the cases where no command could be run as asked, and each says what to do about it. Messages are
//! lowercase without a trailing period.

use std::io;
use std::path::PathBuf;

/// Why a command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bubblewrap binary is not installed (or not where configured).
    #[error(
        "bubblewrap (bwrap) is not installed at {path}: install it with `apt-get install -y bubblewrap` (Debian/Ubuntu) or `dnf install bubblewrap`; refusing to run unsandboxed"
    )]
    BubblewrapMissing {
        /// Where bwrap was looked for.
        path: PathBuf,
    },

    /// bwrap exists but could not build the sandbox (user namespaces disabled, seccomp, a
    /// container without the needed privileges).
    #[error(
        "bubblewrap cannot create its sandbox on this host ({detail}); enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or run with the privileges bwrap needs); refusing to run unsandboxed"
    )]
    SandboxUnavailable {
        /// What bwrap said.
        detail: String,
    },

    /// `setsid(1)` (util-linux) is missing; sandboxes need it to be killable as a whole.
    #[error(
        "setsid not found (looked in /usr/bin, /bin): install util-linux; refusing to run unsandboxed"
    )]
    SetsidMissing,

    /// Resource limits were asked for and cannot be enforced on this host.
    #[error(
        "cannot enforce resource limits with cgroups ({detail}); run as root or with a delegated cgroup, or turn the limits off; refusing to run without them"
    )]
    CgroupsUnavailable {
        /// What failed.
        detail: String,
    },

    /// The session's long-lived sandbox ended (killed, out of memory); start a new session.
    /// The apptainer binary is not installed (or not where configured).
    #[error(
        "apptainer is not installed at {path} (or does not run): install Apptainer (https://apptainer.org/docs/admin/main/installation.html) or choose another backend; refusing to run without it"
    )]
    ApptainerMissing {
        /// Where apptainer was looked for.
        path: PathBuf,
    },
    /// The ssh backend cannot connect or prepare the remote side.
    #[error("the ssh backend cannot run: {detail}")]
    SshUnavailable {
        /// What is wrong.
        detail: String,
    },
    /// The docker backend cannot run (engine, image or agent).
    #[error("the docker backend cannot run: {detail}")]
    ContainerUnavailable {
        /// What is wrong (engine unreachable, image missing, agent not starting).
        detail: String,
    },
    #[error("the session's sandbox is gone")]
    SandboxGone,

    /// bash could not be found on the host.
    #[error("bash not found (looked in {searched}); slotbox runs every command with bash")]
    BashMissing {
        /// The places searched.
        searched: String,
    },

    /// The workspace directory is missing or not a directory.
    #[error("workspace {path} is not a directory")]
    WorkspaceMissing {
        /// The configured workspace.
        path: PathBuf,
    },

    /// A path that must be valid UTF-8 (it is passed to bash as text) is not.
    #[error("path {path} is not valid UTF-8")]
    NonUtf8Path {
        /// The offending path.
        path: PathBuf,
    },

    /// The session's shell state could not be initialised.
    #[error("could not start the session's shell: {detail}")]
    SessionStart {
        /// What went wrong, with the shell's output.
        detail: String,
    },

    /// An IO operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path or program.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// Results of the execution core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
