//! Backends: where one command runs.
//!
//! A backend contributes only a plan ("start this process to run bash with this script"); waiting,
//! output, timeouts, the session snapshot and cwd tracking are shared (`spawn`, `session`). Docker,
//! SSH and Apptainer join this enum as variants with their own planning module.

pub mod apptainer;
pub(crate) mod bubblewrap;
pub mod docker;
pub(crate) mod local;
pub mod ssh;

use std::path::PathBuf;

pub use apptainer::ApptainerConfig;
pub use bubblewrap::AgentCommand;
pub use bubblewrap::BubblewrapConfig;
pub use bubblewrap::Network;
pub use bubblewrap::SandboxLimits;
pub use docker::DockerConfig;
pub use ssh::SshConfig;

/// Where commands run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Directly on the host, as the current user. No isolation at all.
    Local,
    /// In a bubblewrap sandbox: own user/PID/IPC/UTS namespaces, system dirs read-only, only the
    /// workspace writable, no network unless allowed.
    Bubblewrap(BubblewrapConfig),
    /// In a container of its own per session, on a local Docker Engine (see `docker`).
    Docker(DockerConfig),
    /// In `apptainer exec` of an image, per call (see `apptainer`).
    Apptainer(ApptainerConfig),
    /// On another machine over one persistent ssh connection per session (see `ssh`).
    Ssh(SshConfig),
}

impl Backend {
    /// The backend's short name, as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Bubblewrap(_) => "bwrap",
            Backend::Docker(_) => "docker",
            Backend::Apptainer(_) => "apptainer",
            Backend::Ssh(_) => "ssh",
        }
    }

    /// The workspace directory as commands in this backend see it.
    pub fn workspace_path(&self, host_workspace: &std::path::Path) -> crate::Result<String> {
        match self {
            Backend::Local => Ok(crate::plan::utf8(host_workspace)?.to_owned()),
            Backend::Bubblewrap(config) => Ok(config.workspace_mount.clone()),
            Backend::Docker(config) => Ok(config.workspace_mount.clone()),
            Backend::Apptainer(config) => Ok(config.workspace_mount.clone()),
            // Known for sure once connected (the session reports the resolved one).
            Backend::Ssh(config) => Ok(config.workspace.clone().unwrap_or_else(|| "~".to_owned())),
        }
    }

    /// Variables the backend sets by default (an explicit `EnvPolicy` value wins).
    pub(crate) fn default_env(&self, host_workspace: &std::path::Path) -> Vec<(String, String)> {
        match self {
            Backend::Local => std::env::var("HOME")
                .ok()
                .map(|home| vec![("HOME".to_owned(), home)])
                .unwrap_or_else(|| {
                    vec![(
                        "HOME".to_owned(),
                        host_workspace.to_string_lossy().into_owned(),
                    )]
                }),
            // No host home inside the sandbox: the workspace is home.
            Backend::Bubblewrap(config) => {
                vec![("HOME".to_owned(), config.workspace_mount.clone())]
            }
            Backend::Docker(config) => {
                vec![("HOME".to_owned(), config.workspace_mount.clone())]
            }
            Backend::Apptainer(config) => {
                vec![("HOME".to_owned(), config.workspace_mount.clone())]
            }
            // The remote user's home, filled in once connected.
            Backend::Ssh(_) => Vec::new(),
        }
    }
}

/// The default place to look for a program: the first `PATH` entry holding it, else `fallback`.
pub(crate) fn find_program(name: &str, fallback: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(fallback))
}
