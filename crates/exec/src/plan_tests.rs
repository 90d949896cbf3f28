//! Snapshot tests of every backend's plan, from a fixed host layout (no bwrap needed).

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::backend::BubblewrapConfig;
use crate::backend::Network;

fn layout() -> HostLayout {
    HostLayout {
        bash: "/usr/bin/bash".to_owned(),
        setsid: Some("/usr/bin/setsid".to_owned()),
        root_entries: vec![
            RootEntry::Symlink {
                path: "/bin".to_owned(),
                target: "usr/bin".to_owned(),
            },
            RootEntry::Symlink {
                path: "/lib".to_owned(),
                target: "usr/lib".to_owned(),
            },
            RootEntry::Dir {
                path: "/lib64".to_owned(),
            },
        ],
        extra_system_dirs: vec!["/opt".to_owned()],
        masked_files: vec![
            "/etc/shadow".to_owned(),
            "/etc/ssh/ssh_host_ed25519_key".to_owned(),
        ],
    }
}

fn env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("HOME".to_owned(), "/workspace".to_owned()),
        ("PATH".to_owned(), crate::env::DEFAULT_PATH.to_owned()),
    ])
}

fn bwrap(network: Network) -> Backend {
    Backend::Bubblewrap(BubblewrapConfig {
        bwrap: "/usr/bin/bwrap".into(),
        network,
        workspace_mount: "/workspace".to_owned(),
        agent: None,
        limits: None,
    })
}

fn plan_of(
    backend: &Backend,
    session_dir: Option<&Path>,
    script: ShellScript,
    login: bool,
) -> SpawnPlan {
    let layout = layout();
    let env = env();
    let invocation = ShellInvocation { login, script };
    backend
        .plan(&PlanInput {
            layout: &layout,
            workspace: Path::new("/srv/slots/slot_0"),
            session: session_dir.map(|state| SessionDirs {
                state,
                tmp: Path::new("/var/tmp/slotbox-tmp-x"),
            }),
            env: &env,
            invocation: &invocation,
        })
        .unwrap()
}

fn session_call() -> ShellScript {
    ShellScript::Session {
        cwd: "/workspace/src dir".to_owned(),
        command: "echo hi".to_owned(),
    }
}

#[test]
fn local_session_call() {
    let plan = plan_of(
        &Backend::Local,
        Some(Path::new("/tmp/slotbox-session-x")),
        session_call(),
        false,
    );
    insta::assert_snapshot!(plan.to_string());
    assert_eq!(plan.args[1], SESSION_WRAPPER);
}

#[test]
fn local_login_snapshot_call() {
    let plan = plan_of(
        &Backend::Local,
        Some(Path::new("/tmp/slotbox-session-x")),
        session_call(),
        true,
    );
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn local_one_shot() {
    let script = ShellScript::OneShot {
        cwd: "/home/me/project".to_owned(),
        command: "ls -la".to_owned(),
    };
    insta::assert_snapshot!(plan_of(&Backend::Local, None, script, false).to_string());
}

#[test]
fn bubblewrap_session_call_without_network() {
    let plan = plan_of(
        &bwrap(Network::Off),
        Some(Path::new("/tmp/slotbox-session-x")),
        session_call(),
        false,
    );
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn bubblewrap_one_shot_with_network() {
    let script = ShellScript::OneShot {
        cwd: "/workspace".to_owned(),
        command: "curl -s example.org".to_owned(),
    };
    let plan = plan_of(&bwrap(Network::On), None, script, false);
    assert!(!plan.args.iter().any(|arg| arg == "--unshare-net"));
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn bubblewrap_never_binds_the_host_root_or_home() {
    let plan = plan_of(
        &bwrap(Network::Off),
        Some(Path::new("/tmp/s")),
        session_call(),
        false,
    );
    let binds: Vec<&[String]> = plan
        .args
        .windows(3)
        .filter(|window| window[0] == "--bind" || window[0] == "--ro-bind")
        .collect();
    for bind in binds {
        assert_ne!(bind[1], "/", "the host root must not be visible");
        assert!(!bind[1].starts_with("/home") && !bind[1].starts_with("/root"));
    }
}

#[test]
fn bubblewrap_without_setsid_is_an_error() {
    let mut layout = layout();
    layout.setsid = None;
    let env = env();
    let invocation = ShellInvocation {
        login: false,
        script: session_call(),
    };
    let result = bwrap(Network::Off).plan(&PlanInput {
        layout: &layout,
        workspace: Path::new("/srv/slots/slot_0"),
        session: None,
        env: &env,
        invocation: &invocation,
    });
    assert!(matches!(result, Err(Error::SetsidMissing)), "{result:?}");
}

#[test]
fn non_utf8_workspace_is_an_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let layout = layout();
    let env = env();
    let invocation = ShellInvocation {
        login: false,
        script: session_call(),
    };
    let workspace = Path::new(std::ffi::OsStr::from_bytes(b"/srv/\xff"));
    let result = bwrap(Network::Off).plan(&PlanInput {
        layout: &layout,
        workspace,
        session: None,
        env: &env,
        invocation: &invocation,
    });
    assert!(matches!(result, Err(Error::NonUtf8Path { .. })));
}

fn apptainer(network: Network, overlay: Option<&str>) -> Backend {
    Backend::Apptainer(crate::ApptainerConfig {
        apptainer: "/usr/bin/apptainer".into(),
        image: "/images/agent.sif".to_owned(),
        network,
        workspace_mount: "/workspace".to_owned(),
        overlay: overlay.map(Into::into),
    })
}

#[test]
fn apptainer_session_call_without_network() {
    let plan = plan_of(
        &apptainer(Network::Off, None),
        Some(Path::new("/tmp/slotbox-session-x")),
        session_call(),
        false,
    );
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn apptainer_one_shot_with_network_and_an_overlay() {
    let script = ShellScript::OneShot {
        cwd: "/workspace/src".to_owned(),
        command: "make".to_owned(),
    };
    let plan = plan_of(
        &apptainer(Network::On, Some("/srv/overlays/slot_0")),
        None,
        script,
        false,
    );
    assert!(!plan.args.iter().any(|arg| arg == "--network"));
    // The command's variables reach the container only through APPTAINERENV_*, never argv, and
    // HOME (which apptainer refuses that way) through `--home`.
    assert!(!plan.args.iter().any(|arg| arg.contains("PATH=")));
    assert!(!plan.env.contains_key("APPTAINERENV_HOME"));
    insta::assert_snapshot!(plan.to_string());
}
