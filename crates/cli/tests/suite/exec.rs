//! `slotbox exec` end to end.

use std::time::Duration;
use std::time::Instant;

use pretty_assertions::assert_eq;
use slotbox_protocol::ExecResult;

use super::backends;
use super::slotbox;
use super::stderr;
use super::stdout;

#[test]
fn echo_hi_prints_hi() {
    let dir = tempfile::tempdir().unwrap();
    let output = slotbox(dir.path(), &["exec", "--", "echo", "hi"], &[]);
    assert_eq!(stdout(&output), "hi\n");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn exit_code_passes_through_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    for backend in backends() {
        let output = slotbox(
            dir.path(),
            &[
                "exec",
                "--backend",
                backend,
                "--",
                "echo out; echo err >&2; exit 42",
            ],
            &[],
        );
        assert_eq!(output.status.code(), Some(42), "{backend}");
        assert_eq!(stdout(&output), "out\nerr\n", "{backend}");
    }
}

#[test]
fn timeout_exits_124_with_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    for backend in backends() {
        let started = Instant::now();
        let output = slotbox(
            dir.path(),
            &[
                "exec",
                "--backend",
                backend,
                "--timeout",
                "0.5",
                "--",
                "echo partial; sleep 30",
            ],
            &[],
        );
        assert_eq!(output.status.code(), Some(124), "{backend}");
        assert_eq!(
            stdout(&output),
            "partial\n\n[Command timed out after 0.5s]",
            "{backend}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[test]
fn stdin_file_is_piped_and_default_stdin_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "from a file\n").unwrap();
    for backend in backends() {
        let output = slotbox(
            dir.path(),
            &[
                "exec",
                "--backend",
                backend,
                "--stdin-file",
                input.to_str().unwrap(),
                "--",
                "tr a-z A-Z",
            ],
            &[],
        );
        assert_eq!(stdout(&output), "FROM A FILE\n", "{backend}");
        let output = slotbox(
            dir.path(),
            &[
                "exec",
                "--backend",
                backend,
                "--timeout",
                "5",
                "--",
                "cat; echo eof",
            ],
            &[],
        );
        assert_eq!(stdout(&output), "eof\n", "{backend}");
    }
}

#[test]
fn json_result_has_every_field() {
    let dir = tempfile::tempdir().unwrap();
    for backend in backends() {
        let output = slotbox(
            dir.path(),
            &[
                "exec",
                "--backend",
                backend,
                "--json",
                "--max-output-chars",
                "200",
                "--",
                "seq 1 1000; mkdir -p sub; cd sub",
            ],
            &[],
        );
        assert_eq!(
            output.status.code(),
            Some(0),
            "{backend}: {}",
            stderr(&output)
        );
        let result: ExecResult = serde_json::from_slice(&output.stdout).unwrap();
        assert!(result.truncated, "{backend}");
        assert!(result.output.contains("[OUTPUT TRUNCATED - "));
        assert!(result.output.chars().count() <= 200);
        assert!(result.output.starts_with("1\n2\n"));
        assert!(result.output.ends_with("999\n1000\n"));
        assert!(!result.timed_out);
        assert!(
            result.cwd.ends_with("/sub"),
            "{backend}: the cwd after the command: {}",
            result.cwd
        );
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        for field in [
            "exit_code",
            "output",
            "timed_out",
            "truncated",
            "cwd",
            "duration_ms",
        ] {
            assert!(value.get(field).is_some(), "missing {field}");
        }
    }
}

#[test]
fn utf8_and_invalid_bytes_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    for backend in backends() {
        let output = slotbox(
            dir.path(),
            &[
                "exec",
                "--backend",
                backend,
                "--",
                "printf 'h\\xc3\\xa9llo \\xff!'",
            ],
            &[],
        );
        assert_eq!(stdout(&output), "héllo \u{FFFD}!", "{backend}");
    }
}

#[test]
fn background_child_does_not_hang_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    for backend in backends() {
        let started = Instant::now();
        let output = slotbox(
            dir.path(),
            &["exec", "--backend", backend, "--", "sleep 30 & echo bg"],
            &[],
        );
        assert_eq!(stdout(&output), "bg\n", "{backend}");
        assert_eq!(output.status.code(), Some(0));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{backend}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn secrets_in_slotbox_environment_are_not_inherited_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SLOTBOX_TEST_SECRET", "s3cret")];
    let output = slotbox(
        dir.path(),
        &["exec", "--", "echo \"[$SLOTBOX_TEST_SECRET]\""],
        &env,
    );
    assert_eq!(stdout(&output), "[]\n");
    let output = slotbox(
        dir.path(),
        &[
            "exec",
            "--allow-env",
            "SLOTBOX_TEST_SECRET",
            "--",
            "echo \"[$SLOTBOX_TEST_SECRET]\"",
        ],
        &env,
    );
    assert_eq!(stdout(&output), "[s3cret]\n");
}

#[test]
fn backend_from_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    if !backends().contains(&"bwrap") {
        return;
    }
    let output = slotbox(
        dir.path(),
        &["exec", "--", "hostname"],
        &[("SLOTBOX_BACKEND", "bwrap")],
    );
    assert_eq!(stdout(&output), "slotbox\n");
    // The command line wins over the environment.
    let output = slotbox(
        dir.path(),
        &["exec", "--backend", "local", "--", "hostname"],
        &[("SLOTBOX_BACKEND", "bwrap")],
    );
    assert_ne!(stdout(&output), "slotbox\n");
}

#[test]
fn unknown_backend_and_bad_flags_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let output = slotbox(
        dir.path(),
        &["exec", "--backend", "firecracker", "--", "true"],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("invalid value 'firecracker'"), "{message}");
    assert!(
        message.contains("local") && message.contains("bwrap"),
        "{message}"
    );

    let output = slotbox(
        dir.path(),
        &["exec", "--timeout", "soon", "--", "true"],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("`soon` is not a number of seconds"),
        "{}",
        stderr(&output)
    );

    let output = slotbox(dir.path(), &["exec", "--timeout", "-1", "--", "true"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));

    let output = slotbox(dir.path(), &["exec"], &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn missing_bwrap_says_what_to_install_and_never_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let output = slotbox(
        dir.path(),
        &[
            "exec",
            "--backend",
            "bwrap",
            "--bwrap",
            "/nonexistent/bwrap",
            "--",
            "echo ran",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(125));
    assert_eq!(stdout(&output), "", "the command must not run unsandboxed");
    let message = stderr(&output);
    assert!(
        message.contains("apt-get install -y bubblewrap"),
        "{message}"
    );
    assert!(message.contains("refusing to run unsandboxed"), "{message}");
}

#[test]
fn bwrap_without_namespaces_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("bwrap");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let output = slotbox(
        dir.path(),
        &["exec", "--backend", "bwrap", "--", "echo ran"],
        &[("SLOTBOX_BWRAP", fake.to_str().unwrap())],
    );
    assert_eq!(output.status.code(), Some(125));
    assert_eq!(stdout(&output), "");
    let message = stderr(&output);
    assert!(message.contains("cannot create its sandbox"), "{message}");
    assert!(
        message.contains("setting up uid map: Permission denied"),
        "{message}"
    );
}

fn test_image() -> String {
    std::env::var("SLOTBOX_TEST_IMAGE").unwrap_or_else(|_| "slotbox-sandbox:test".to_owned())
}

#[test]
fn docker_backend_keeps_the_contract_and_reads_hermes_settings() {
    let dir = tempfile::tempdir().unwrap();
    let image = test_image();
    let probe = slotbox(
        dir.path(),
        &[
            "exec",
            "--backend",
            "docker",
            "--image",
            &image,
            "--",
            "true",
        ],
        &[],
    );
    let available = if probe.status.success() {
        Ok(())
    } else {
        Err(stderr(&probe))
    };
    if !slotbox_test_support::require("the Docker Engine and the sandbox image", available) {
        return;
    }
    let output = slotbox(
        dir.path(),
        &[
            "exec",
            "--backend",
            "docker",
            "--image",
            &image,
            "--json",
            "--",
            "cd /tmp && test -f /.dockerenv && echo in-container; (exit 3)",
        ],
        &[],
    );
    let result: ExecResult = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        (
            result.exit_code,
            result.output.as_str(),
            result.cwd.as_str()
        ),
        (3, "in-container\n", "/tmp")
    );
    assert_eq!(output.status.code(), Some(3));
    // hermes-agent's variables choose the backend, the image and the timeout.
    let started = Instant::now();
    let output = slotbox(
        dir.path(),
        &[
            "exec",
            "--",
            "test -f /.dockerenv && echo in-container; sleep 30",
        ],
        &[
            ("TERMINAL_ENV", "docker"),
            ("TERMINAL_DOCKER_IMAGE", &image),
            ("TERMINAL_TIMEOUT", "1"),
        ],
    );
    assert_eq!(output.status.code(), Some(124), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("in-container\n"),
        "{}",
        stdout(&output)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn backends_slotbox_does_not_have_are_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let output = slotbox(
        dir.path(),
        &["exec", "--", "true"],
        &[("TERMINAL_ENV", "modal")],
    );
    assert_eq!(output.status.code(), Some(125));
    assert!(
        stderr(&output).contains("unknown backend"),
        "{}",
        stderr(&output)
    );
    // hermes' `singularity` is slotbox's apptainer, which this machine does not have: refused.
    let output = slotbox(
        dir.path(),
        &["exec", "--image", "/images/agent.sif", "--", "true"],
        &[("TERMINAL_ENV", "singularity")],
    );
    assert_eq!(output.status.code(), Some(125));
    assert!(
        stderr(&output).contains("apptainer is not installed"),
        "{}",
        stderr(&output)
    );
    // An explicit slotbox setting wins over hermes-agent's.
    let output = slotbox(
        dir.path(),
        &["exec", "--backend", "local", "--", "echo local"],
        &[("TERMINAL_ENV", "modal")],
    );
    assert_eq!(stdout(&output), "local\n");
}

#[test]
fn ssh_backend_keeps_the_contract_checks_host_keys_and_reads_hermes_settings() {
    let server = slotbox_test_support::TestSshd::start();
    let probe = server.as_ref().map(|_| ()).map_err(Clone::clone);
    if !slotbox_test_support::require("sshd on loopback", probe) {
        return;
    }
    let server = server.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let port = server.port.to_string();
    let workspace = dir.path().to_str().unwrap();
    let known_hosts = server.known_hosts.to_str().unwrap();
    let key = server.identity.to_str().unwrap();
    let output = slotbox(
        dir.path(),
        &[
            "exec",
            "--backend",
            "ssh",
            "--ssh-host",
            "127.0.0.1",
            "--ssh-port",
            &port,
            "--ssh-user",
            &server.user,
            "--ssh-key",
            key,
            "--known-hosts",
            known_hosts,
            "--remote-workspace",
            workspace,
            "--json",
            "--",
            "cd sub && echo hi && echo err >&2; (exit 4)",
        ],
        &[],
    );
    let result: ExecResult = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        (result.exit_code, result.output.as_str(), result.cwd),
        (4, "hi\nerr\n", format!("{workspace}/sub"))
    );
    // hermes-agent's settings choose the backend and the host; a timeout kills the remote
    // command, not just the local client.
    let tag = format!("slotbox-ssh-{}", std::process::id());
    let started = Instant::now();
    let output = slotbox(
        dir.path(),
        &[
            "exec",
            "--known-hosts",
            known_hosts,
            "--remote-workspace",
            workspace,
            "--timeout",
            "1",
            "--",
            &format!("echo remote; exec -a {tag} sleep 60"),
        ],
        &[
            ("TERMINAL_ENV", "ssh"),
            ("TERMINAL_SSH_HOST", "127.0.0.1"),
            ("TERMINAL_SSH_USER", &server.user),
            ("TERMINAL_SSH_PORT", &port),
            ("TERMINAL_SSH_KEY", key),
        ],
    );
    assert_eq!(output.status.code(), Some(124), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("remote\n"),
        "{}",
        stdout(&output)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        !super::process_alive(&tag),
        "the remote command outlived its timeout"
    );
    // An unknown host key is refused, never accepted.
    let empty = dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let output = slotbox(
        dir.path(),
        &[
            "exec",
            "--backend",
            "ssh",
            "--ssh-host",
            "127.0.0.1",
            "--ssh-port",
            &port,
            "--ssh-user",
            &server.user,
            "--ssh-key",
            key,
            "--known-hosts",
            empty.to_str().unwrap(),
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(125));
    assert!(
        stderr(&output).contains("Host key verification failed"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_config_file_sets_defaults_that_flags_and_variables_override() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("slotbox.toml");
    std::fs::write(&config, "[exec]\nbackend = \"local\"\ntimeout_s = 1\n").unwrap();
    let config = config.to_str().unwrap();
    // The file's timeout applies...
    let output = slotbox(
        dir.path(),
        &["exec", "--config", config, "--", "sleep 5"],
        &[],
    );
    assert_eq!(output.status.code(), Some(124));
    // ...below the command line,
    let output = slotbox(
        dir.path(),
        &[
            "exec",
            "--config",
            config,
            "--timeout",
            "30",
            "--",
            "sleep 1.5; echo done",
        ],
        &[],
    );
    assert_eq!(
        (output.status.code(), stdout(&output)),
        (Some(0), "done\n".to_owned())
    );
    // ...and below hermes-agent's variable.
    let output = slotbox(
        dir.path(),
        &["exec", "--", "sleep 1.5; echo done"],
        &[("SLOTBOX_CONFIG", config), ("TERMINAL_TIMEOUT", "30")],
    );
    assert_eq!(
        (output.status.code(), stdout(&output)),
        (Some(0), "done\n".to_owned())
    );
    // A wrong value names its key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[exec]\nbackend = \"modal\"\n").unwrap();
    let output = slotbox(
        dir.path(),
        &["exec", "--config", bad.to_str().unwrap(), "--", "true"],
        &[],
    );
    assert_eq!(output.status.code(), Some(125));
    assert!(
        stderr(&output).contains("[exec] backend"),
        "{}",
        stderr(&output)
    );
}
