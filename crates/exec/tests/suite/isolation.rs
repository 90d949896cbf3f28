//! The bubblewrap sandbox, checked from inside: what a command can and cannot reach.

use pretty_assertions::assert_eq;
use slotbox_exec::Backend;
use slotbox_exec::BubblewrapConfig;
use slotbox_exec::Error;
use slotbox_exec::ExecRequest;
use slotbox_exec::Network;
use slotbox_exec::Session;
use slotbox_exec::SessionConfig;

use super::Fixture;
use super::bubblewrap;
use super::fixture;

async fn sandbox() -> Option<Fixture> {
    let backend = bubblewrap().await?;
    Some(fixture(&backend).await)
}

#[tokio::test]
async fn workspace_is_writable_system_is_read_only() {
    let Some(mut f) = sandbox().await else { return };
    let r = f.run("echo data > file && cat file").await;
    assert_eq!(r.output, "data\n");
    assert_eq!(
        std::fs::read_to_string(f.workspace.path().join("file")).unwrap(),
        "data\n"
    );
    for target in [
        "/usr/slotbox-probe",
        "/etc/slotbox-probe",
        "/slotbox-probe",
        "/bin/slotbox-probe",
    ] {
        let r = f.run(&format!("touch {target}")).await;
        assert_ne!(r.exit_code, 0, "{target} was writable: {}", r.output);
    }
}

#[tokio::test]
async fn commands_have_no_capabilities_and_cannot_remount_the_system_writable() {
    let Some(Backend::Bubblewrap(config)) = bubblewrap().await else {
        return;
    };
    // Per-call sandboxes and the long-lived one with its agent: both, also when slotbox runs
    // as root (bwrap keeps all capabilities for root unless told to drop them).
    for backend in [
        Backend::Bubblewrap(config.clone()),
        Backend::Bubblewrap(super::with_agent(config)),
    ] {
        let mut f = fixture(&backend).await;
        let r = f
            .run("grep -E '^Cap(Eff|Prm|Bnd):' /proc/self/status")
            .await;
        assert_eq!(
            r.output,
            "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n"
        );
        let r = f
            .run("mount -o remount,rw,bind /usr 2>&1; touch /usr/slotbox-probe 2>&1; echo $?")
            .await;
        assert!(r.output.trim_end().ends_with('1'), "{}", r.output);
        assert!(!std::path::Path::new("/usr/slotbox-probe").exists());
    }
}

#[tokio::test]
async fn host_home_other_workspaces_and_secrets_are_invisible() {
    let Some(mut f) = sandbox().await else { return };
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("secret.txt"), "other slot's data").unwrap();
    let other_path = other.path().display().to_string();
    let host_workspace = f.workspace.path().display().to_string();
    let r = f
        .run(&format!(
            "ls {other_path} 2>&1; ls {host_workspace} 2>&1; ls /root /home 2>&1; cat /etc/shadow | wc -c; ls /run"
        ))
        .await;
    assert!(!r.output.contains("secret.txt"), "{}", r.output);
    assert!(
        r.output
            .contains(&format!("ls: cannot access '{other_path}'")),
        "{}",
        r.output
    );
    assert!(
        r.output.contains("ls: cannot access '/root'"),
        "{}",
        r.output
    );
    assert!(
        r.output.contains("ls: cannot access '/home'"),
        "{}",
        r.output
    );
    // /etc/shadow is masked by an empty file.
    assert!(r.output.contains("\n0\n"), "{}", r.output);
    assert!(
        r.output.trim_end().ends_with("slotbox"),
        "only our state dir in /run: {}",
        r.output
    );
}

#[tokio::test]
async fn namespaces_are_private() {
    let Some(mut f) = sandbox().await else { return };
    let r = f
        .run("hostname; echo $$; ps -e --no-headers 2>/dev/null | wc -l || true")
        .await;
    let lines: Vec<&str> = r.output.lines().collect();
    assert_eq!(lines[0], "slotbox");
    // In a new PID namespace the shell's pid is tiny (bwrap's init is 1).
    let pid: u32 = lines[1].parse().unwrap();
    assert!(pid < 10, "pid {pid}: not in a private PID namespace");
    // bwrap sets no_new_privs: nothing in the sandbox can gain privileges through setuid binaries.
    let r = f.run("grep NoNewPrivs /proc/self/status").await;
    assert_eq!(r.output, "NoNewPrivs:\t1\n");
}

#[tokio::test]
async fn parent_environment_does_not_leak() {
    let Some(mut f) = sandbox().await else { return };
    // The test process's own environment stands in for the server's secrets.
    let r = f.run("env").await;
    for line in r.output.lines() {
        let name = line.split('=').next().unwrap_or("");
        assert!(
            [
                "PATH",
                "HOME",
                "LANG",
                "LC_ALL",
                "LC_CTYPE",
                "TZ",
                "PAGER",
                "GIT_PAGER",
                "PWD",
                "SHLVL",
                "_",
                "OLDPWD"
            ]
            .contains(&name),
            "unexpected variable in the sandbox: {line}"
        );
    }
    assert!(r.output.contains("HOME=/workspace\n"), "{}", r.output);
}

#[tokio::test]
async fn network_is_off_by_default_and_on_when_allowed() {
    let Some(Backend::Bubblewrap(config)) = bubblewrap().await else {
        return;
    };
    let workspace = tempfile::tempdir().unwrap();
    let list_interfaces =
        "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '";
    let mut off = Session::start(SessionConfig::new(
        Backend::Bubblewrap(config.clone()),
        workspace.path(),
    ))
    .await
    .unwrap();
    let r = off.exec(&ExecRequest::new(list_interfaces)).await.unwrap();
    assert_eq!(r.output, "lo ", "only loopback without network");
    let on_config = BubblewrapConfig {
        network: Network::On,
        ..config
    };
    let mut on = Session::start(SessionConfig::new(
        Backend::Bubblewrap(on_config),
        workspace.path(),
    ))
    .await
    .unwrap();
    let r = on.exec(&ExecRequest::new(list_interfaces)).await.unwrap();
    let host_interfaces = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count()
        - 2;
    assert_eq!(
        r.output.split_whitespace().count(),
        host_interfaces,
        "{}",
        r.output
    );
}

#[tokio::test]
async fn tmp_is_private_to_the_session_and_persists_within_it() {
    let Some(mut a) = sandbox().await else { return };
    let Some(mut b) = sandbox().await else { return };
    a.run("echo mine > /tmp/note").await;
    assert_eq!(a.run("cat /tmp/note").await.output, "mine\n");
    let r = b.run("cat /tmp/note 2>&1").await;
    assert!(r.output.contains("No such file"), "{}", r.output);
}

#[tokio::test]
async fn planted_symlink_in_state_dir_is_not_followed() {
    let Some(mut f) = sandbox().await else { return };
    // The state dir is writable from inside; a link named snapshot.next must not make slotbox read
    // the host file it points at (plant it and exit early, so the wrapper does not replace it).
    let r = f
        .run("ln -sf /etc/hostname /run/slotbox/snapshot.next; exit 0")
        .await;
    assert_eq!(r.exit_code, 0);
    let host_hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    assert!(host_hostname.is_empty() || !r.cwd.contains(host_hostname.trim()));
    assert_eq!(r.cwd, "/workspace");
}

#[tokio::test]
async fn missing_bwrap_is_a_clear_error() {
    let workspace = tempfile::tempdir().unwrap();
    let config = BubblewrapConfig {
        bwrap: "/nonexistent/bwrap".into(),
        ..BubblewrapConfig::default()
    };
    let error = Session::start(SessionConfig::new(
        Backend::Bubblewrap(config),
        workspace.path(),
    ))
    .await
    .unwrap_err();
    assert!(matches!(error, Error::BubblewrapMissing { .. }));
    assert!(
        error.to_string().contains("apt-get install -y bubblewrap"),
        "{error}"
    );
    assert!(
        error.to_string().contains("refusing to run unsandboxed"),
        "{error}"
    );
}

#[tokio::test]
async fn bwrap_that_cannot_create_namespaces_is_refused() {
    // A stand-in bwrap that fails the way bwrap does on a host without user namespaces.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("bwrap");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace, likely because the kernel does not allow non-privileged user namespaces.' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let config = BubblewrapConfig {
        bwrap: fake,
        ..BubblewrapConfig::default()
    };
    let error = Session::start(SessionConfig::new(
        Backend::Bubblewrap(config),
        workspace.path(),
    ))
    .await
    .unwrap_err();
    assert!(matches!(error, Error::SandboxUnavailable { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("No permissions to create new namespace"),
        "{error}"
    );
}

#[tokio::test]
async fn long_lived_sandbox_keeps_background_jobs_until_the_session_ends() {
    let Some(Backend::Bubblewrap(config)) = bubblewrap().await else {
        return;
    };
    let workspace = tempfile::tempdir().unwrap();
    let backend = Backend::Bubblewrap(super::with_agent(config));
    let mut session = Session::start(SessionConfig::new(backend, workspace.path()))
        .await
        .unwrap();
    let tag = format!("slotbox_agent_bg_{}", std::process::id());
    let r = session
        .exec(&ExecRequest::new(format!(
            "(exec -a {tag} sleep 60) > /dev/null 2>&1 & echo $! > /tmp/bg.pid; echo started"
        )))
        .await
        .unwrap();
    assert_eq!(r.output, "started\n");
    // The job lives on into the next call (a server started by one command serves the next).
    let r = session
        .exec(&ExecRequest::new(
            "kill -0 $(cat /tmp/bg.pid) && echo alive; cat /proc/1/cmdline | tr '\\0' ' '",
        ))
        .await
        .unwrap();
    assert!(r.output.starts_with("alive\n"), "{}", r.output);
    assert!(super::process_alive(&tag));
    // Ending the session ends everything in its sandbox.
    drop(session);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while super::process_alive(&tag) {
        assert!(
            std::time::Instant::now() < deadline,
            "a job outlived its session's sandbox"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn cgroup_limits_hold_for_memory_and_processes() {
    let Some(Backend::Bubblewrap(config)) = bubblewrap().await else {
        return;
    };
    let layout = slotbox_exec::CgroupLayout::detect().map_err(|error| error.to_string());
    let layout = match layout {
        Ok(layout) => layout,
        Err(reason) => {
            slotbox_test_support::require("writable cgroups", Err(reason));
            return;
        }
    };
    let limits = slotbox_exec::CgroupLimits {
        memory_bytes: Some(64 * 1024 * 1024),
        pids: Some(32),
        cpu_millis: Some(500),
    };
    let config = BubblewrapConfig {
        limits: Some(slotbox_exec::SandboxLimits { layout, limits }),
        ..super::with_agent(config)
    };
    let workspace = tempfile::tempdir().unwrap();
    let mut session = Session::start(SessionConfig::new(
        Backend::Bubblewrap(config),
        workspace.path(),
    ))
    .await
    .unwrap();
    // bash holding 200 MB in a variable: far over 64 MB, so the kernel kills it.
    let r = session
        .exec(&ExecRequest::new(
            "v=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#v}",
        ))
        .await
        .unwrap();
    assert_eq!(r.exit_code, 137, "memory limit not enforced: {}", r.output);
    assert!(!r.output.contains("survived"));
    // 32 processes at most: the 60 background sleeps cannot all start.
    let r = session
        .exec(&ExecRequest::new("for i in $(seq 60); do sleep 2 & done 2>&1 | grep -c 'Resource temporarily unavailable\\|retry'; jobs -r | wc -l; kill $(jobs -p) 2>/dev/null; true"))
        .await
        .unwrap();
    let running: usize = r.output.lines().last().unwrap().trim().parse().unwrap();
    assert!(
        running < 32,
        "pids limit not enforced: {} background jobs ran\n{}",
        running,
        r.output
    );
    // Half a core: a 1.5 s busy loop gets at most about 0.75 s of CPU (unlimited: about 1.5 s).
    let r = session
        .exec(&ExecRequest::new(
            "TIMEFORMAT='%U %S'; { time timeout 1.5 bash -c 'while :; do :; done'; } 2>&1",
        ))
        .await
        .unwrap();
    let cpu: f64 = r
        .output
        .split_whitespace()
        .filter_map(|field| field.parse::<f64>().ok())
        .sum();
    assert!(
        cpu < 1.0,
        "cpu limit not enforced: {cpu} s of CPU in 1.5 s ({})",
        r.output
    );
    // And the session still works afterwards.
    let r = session.exec(&ExecRequest::new("echo fine")).await.unwrap();
    assert_eq!(r.output, "fine\n");
}

#[tokio::test]
async fn sabotaged_state_files_do_not_break_the_session() {
    let Some(mut f) = sandbox().await else { return };
    f.run("export KEEP=1").await;
    // A directory where the wrapper writes its file, and a read-only directory in /tmp.
    let r = f
        .run("mkdir -p /run/slotbox/snapshot.next/x /tmp/ro/inner; chmod 0 /tmp/ro; exit 0")
        .await;
    assert_eq!(r.exit_code, 0);
    let r = f.run("echo $KEEP").await;
    assert_eq!(r.output, "1\n");
    assert_eq!(f.run("echo still").await.output, "still\n");
}

#[tokio::test]
async fn missing_apptainer_is_a_clear_error_not_a_fallback() {
    let workspace = tempfile::tempdir().unwrap();
    let mut config = slotbox_exec::ApptainerConfig::new("docker://debian:12");
    config.apptainer = "/nonexistent/apptainer".into();
    let error = Session::start(SessionConfig::new(
        Backend::Apptainer(config),
        workspace.path(),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&error, Error::ApptainerMissing { path } if path.ends_with("apptainer")),
        "{error}"
    );
    assert!(
        error.to_string().contains("refusing to run without it"),
        "{error}"
    );
}
