//! The local backend: bash straight on the host.
//!
//! No isolation: the command can do whatever the slotbox user can. It exists for development and
//! for hosts where the caller already provides isolation (a container per slot).

use std::path::PathBuf;

use crate::Result;
use crate::plan::PlanInput;
use crate::plan::ProcessGroup;
use crate::plan::ShellScript;
use crate::plan::SpawnPlan;
use crate::plan::bash_args;
use crate::plan::utf8;

pub(crate) fn plan(input: &PlanInput<'_>) -> Result<SpawnPlan> {
    let state_dir = input.session.map(|dirs| utf8(dirs.state)).transpose()?;
    let cwd = match &input.invocation.script {
        // The wrapper enters the tracked cwd itself (with the deleted-directory fallback), so the
        // process starts somewhere that always exists.
        ShellScript::Session { .. } => PathBuf::from("/"),
        ShellScript::OneShot { cwd, .. } => PathBuf::from(cwd),
    };
    Ok(SpawnPlan {
        program: PathBuf::from(&input.layout.bash),
        args: bash_args(input.invocation, state_dir),
        env: input.env.clone(),
        cwd,
        group: ProcessGroup::New,
    })
}
