//! Probes of the host: its layout, and whether bubblewrap can build a sandbox here.
//!
//! Only successes are cached: a failed probe is re-run next time, so installing bwrap or fixing
//! a sysctl takes effect without a restart.

use std::path::Path;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;

use crate::Error;
use crate::Result;
use crate::backend::BubblewrapConfig;
use crate::plan::HostLayout;
use crate::plan::PlanInput;
use crate::plan::ShellInvocation;
use crate::plan::ShellScript;

/// The host layout, read once per process.
pub fn host_layout() -> Result<Arc<HostLayout>> {
    static LAYOUT: OnceLock<Arc<HostLayout>> = OnceLock::new();
    if let Some(layout) = LAYOUT.get() {
        return Ok(Arc::clone(layout));
    }
    let layout = Arc::new(HostLayout::probe()?);
    Ok(Arc::clone(LAYOUT.get_or_init(|| layout)))
}

/// Checks that `config.bwrap` can build the sandbox this backend plans, by running `true` in it.
/// Errors say whether bwrap is missing or the host refuses namespaces; there is no fallback.
pub async fn bubblewrap(
    config: &BubblewrapConfig,
    layout: &HostLayout,
    workspace: &Path,
) -> Result<()> {
    static WORKING: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    let working = WORKING.get_or_init(|| Mutex::new(Vec::new()));
    if working
        .lock()
        .map(|known| known.contains(&config.bwrap))
        .unwrap_or(false)
    {
        return Ok(());
    }
    if !config.bwrap.is_file() {
        return Err(Error::BubblewrapMissing {
            path: config.bwrap.clone(),
        });
    }
    let env = std::collections::BTreeMap::from([(
        "PATH".to_owned(),
        crate::env::DEFAULT_PATH.to_owned(),
    )]);
    let invocation = ShellInvocation {
        login: false,
        script: ShellScript::OneShot {
            cwd: "/".to_owned(),
            command: "true".to_owned(),
        },
    };
    let plan = crate::backend::bubblewrap::plan(
        config,
        &PlanInput {
            layout,
            workspace,
            session: None,
            env: &env,
            invocation: &invocation,
        },
    )?;
    let output = tokio::process::Command::new(&plan.program)
        .args(&plan.args)
        .env_clear()
        .envs(&plan.env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::BubblewrapMissing {
                path: config.bwrap.clone(),
            });
        }
        Err(source) => {
            return Err(Error::Io {
                context: format!("running {}", config.bwrap.display()),
                source,
            });
        }
    };
    if output.status.success() {
        if let Ok(mut known) = working.lock() {
            known.push(config.bwrap.clone());
        }
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let detail = stderr.trim();
    Err(Error::SandboxUnavailable {
        detail: if detail.is_empty() {
            format!("bwrap exited with {}", output.status)
        } else {
            detail.to_owned()
        },
    })
}
