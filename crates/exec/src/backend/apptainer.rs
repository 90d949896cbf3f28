//! The apptainer backend: each command in `apptainer exec` of a SIF image (or any image source
//! apptainer accepts), for HPC hosts where Docker is not allowed.
//!
//! Per call, like bubblewrap without an agent: `--containall` (own PID and IPC namespaces, a
//! clean environment, no host home or /tmp), the workspace and the session's state directory
//! bound read-write, no network unless allowed (`--net --network none`), `--writable-tmpfs` or
//! a persistent `--overlay`. The command's environment is passed as `APPTAINERENV_*` variables
//! of the apptainer process, which apptainer turns into the container's environment even with
//! `--cleanenv`, so values never appear on a command line.
//!
//! Apptainer cannot be installed on the machine this project is built on: the plan is
//! snapshot-tested, and at run time a missing `apptainer` is refused with a clear error (never
//! a fallback to another backend).

use std::path::PathBuf;

use crate::Error;
use crate::Result;
use crate::backend::Network;
use crate::plan::PlanInput;
use crate::plan::ProcessGroup;
use crate::plan::ShellScript;
use crate::plan::SpawnPlan;
use crate::plan::bash_args;
use crate::plan::utf8;

/// Where the session's state directory appears in the container.
const STATE_INSIDE: &str = "/run/slotbox";

/// How commands run under apptainer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApptainerConfig {
    /// The apptainer binary.
    pub apptainer: PathBuf,
    /// The image: a SIF file, a sandbox directory, or a source such as `docker://debian:12`.
    pub image: String,
    /// Network: off by default.
    pub network: Network,
    /// Where the workspace is mounted.
    pub workspace_mount: String,
    /// A persistent overlay (directory or image) for changes outside the workspace; without
    /// one, changes go to a tmpfs that ends with the call.
    pub overlay: Option<PathBuf>,
}

impl ApptainerConfig {
    /// `image` with the `apptainer` on `PATH`, no network, workspace at `/workspace`.
    pub fn new(image: impl Into<String>) -> Self {
        Self {
            apptainer: crate::backend::find_program("apptainer", "/usr/bin/apptainer"),
            image: image.into(),
            network: Network::Off,
            workspace_mount: "/workspace".to_owned(),
            overlay: None,
        }
    }
}

pub(crate) fn plan(config: &ApptainerConfig, input: &PlanInput<'_>) -> Result<SpawnPlan> {
    let workspace = utf8(input.workspace)?;
    // `--quiet`: apptainer's own warnings would land in every command's output.
    let mut args: Vec<String> = vec![
        "--quiet".to_owned(),
        "exec".to_owned(),
        "--containall".to_owned(),
    ];
    if config.network == Network::Off {
        args.extend([
            "--net".to_owned(),
            "--network".to_owned(),
            "none".to_owned(),
        ]);
    }
    match &config.overlay {
        Some(overlay) => args.extend(["--overlay".to_owned(), utf8(overlay)?.to_owned()]),
        None => args.push("--writable-tmpfs".to_owned()),
    }
    // The workspace is the home (apptainer refuses HOME from APPTAINERENV_HOME; `--home` both
    // binds it and sets HOME).
    args.extend([
        "--home".to_owned(),
        format!("{workspace}:{}", config.workspace_mount),
    ]);
    let state_dir = match input.session {
        Some(dirs) => {
            // The session's state, and its /tmp, which persists between its calls as under
            // bubblewrap (`--containall` would give each call an empty one).
            args.extend([
                "--bind".to_owned(),
                format!("{}:{STATE_INSIDE}:rw", utf8(dirs.state)?),
                "--bind".to_owned(),
                format!("{}:/tmp:rw", utf8(dirs.tmp)?),
            ]);
            Some(STATE_INSIDE)
        }
        None => None,
    };
    let pwd = match &input.invocation.script {
        // The wrapper enters the tracked cwd itself (with the deleted-directory fallback).
        ShellScript::Session { .. } => config.workspace_mount.clone(),
        ShellScript::OneShot { cwd, .. } => cwd.clone(),
    };
    args.extend(["--pwd".to_owned(), pwd]);
    args.push(config.image.clone());
    args.push("/bin/bash".to_owned());
    args.extend(bash_args(input.invocation, state_dir));
    // apptainer's own environment: a PATH to find its helpers, and the container's variables.
    let mut env = std::collections::BTreeMap::from([(
        "PATH".to_owned(),
        crate::env::DEFAULT_PATH.to_owned(),
    )]);
    for (name, value) in input.env {
        if name != "HOME" {
            env.insert(format!("APPTAINERENV_{name}"), value.clone());
        }
    }
    Ok(SpawnPlan {
        program: config.apptainer.clone(),
        args,
        env,
        cwd: PathBuf::from("/"),
        group: ProcessGroup::New,
    })
}

/// Refuses clearly when apptainer is not there.
pub(crate) async fn probe(config: &ApptainerConfig) -> Result<()> {
    let version = tokio::process::Command::new(&config.apptainer)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await;
    match version {
        Ok(status) if status.success() => Ok(()),
        _ => Err(Error::ApptainerMissing {
            path: config.apptainer.clone(),
        }),
    }
}
