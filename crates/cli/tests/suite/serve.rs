//! `slotbox serve` as a process: startup checks, the listening line, graceful SIGTERM.

use std::io::BufRead;
use std::io::Read;
use std::io::Write;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use super::backends;
use super::slotbox;
use super::stderr;

/// A running `slotbox serve` and its address.
struct Served {
    child: Child,
    address: String,
    _data: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Served {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let mut args = vec![
        "serve",
        "--port",
        "0",
        "--slots",
        "2",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (child, address) = listening(&args, &[]);
    Served {
        child,
        address,
        _data: data,
    }
}

/// Starts `slotbox ARGS` and reads its ready line (`slotbox …: listening on http://ADDR …`);
/// returns the process and ADDR.
pub(super) fn listening(
    args: &[&str],
    env: &[(&str, &std::path::Path)],
) -> (std::process::Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slotbox"));
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split_once("listening on http://")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    (child, address)
}

/// One HTTP/1.1 request; returns (status, body).
pub(super) fn http(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub(super) fn lease(address: &str) -> String {
    let (status, body) = http(address, "POST", "/v1/leases", "{}");
    assert_eq!(status, 201, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    value["lease_id"].as_str().unwrap().to_owned()
}

#[test]
fn non_loopback_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = slotbox(
        dir.path(),
        &[
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(125));
    assert!(
        stderr(&output).contains("refusing to listen on 0.0.0.0 without a token"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn broken_sandbox_refuses_to_start_unless_isolation_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = slotbox(
        dir.path(),
        &[
            "serve",
            "--port",
            "0",
            "--data-dir",
            data.to_str().unwrap(),
            "--bwrap",
            "/nonexistent/bwrap",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(125));
    let message = stderr(&output);
    assert!(
        message.contains("slot isolation is unavailable"),
        "{message}"
    );
    assert!(message.contains("--isolation none"), "{message}");
    assert!(
        message.contains("apt-get install -y bubblewrap"),
        "{message}"
    );
}

#[test]
fn serves_v1_and_sigterm_kills_running_commands() {
    if !backends().contains(&"bwrap") {
        return;
    }
    let mut served = serve(&[]);
    let (status, body) = http(&served.address, "GET", "/v1/health", "");
    assert_eq!(status, 200);
    assert!(body.contains("\"isolation\":\"bwrap\""), "{body}");
    let lease_id = lease(&served.address);
    let tag = format!("slotbox_sigterm_{}", std::process::id());
    let address = served.address.clone();
    let exec = std::thread::spawn(move || {
        http(
            &address,
            "POST",
            &format!("/v1/leases/{lease_id}/exec"),
            &serde_json::json!({"command": format!("exec -a {tag} sleep 120"), "timeout_s": 300})
                .to_string(),
        )
    });
    let tag = format!("slotbox_sigterm_{}", std::process::id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !super::process_alive(&tag) {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(served.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = served.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !super::process_alive(&tag),
        "a command survived the server's shutdown"
    );
    // The in-flight request was answered (interrupted) before the server exited.
    let (status, body) = exec.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"exit_code\":130"), "{body}");
}

#[test]
fn data_dir_defaults_under_nomad_alloc_dir_and_an_explicit_flag_wins() {
    if !backends().contains(&"bwrap") {
        return;
    }
    let alloc = tempfile::tempdir().unwrap();
    let start = |extra: &[&str]| {
        let mut args = vec!["serve", "--port", "0", "--slots", "1"];
        args.extend_from_slice(extra);
        let (mut child, address) = listening(&args, &[("NOMAD_ALLOC_DIR", alloc.path())]);
        let (_, body) = http(&address, "GET", "/health", "");
        let _ = child.kill();
        let _ = child.wait();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["data_dir"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(start(&[]), alloc.path().join("data").display().to_string());
    let explicit = tempfile::tempdir().unwrap();
    let flag = explicit.path().join("mine");
    assert_eq!(
        start(&["--data-dir", flag.to_str().unwrap()]),
        flag.display().to_string()
    );
}

#[test]
fn slotbox_up_serves_leases_and_stops_its_servers() {
    if !backends().contains(&"bwrap") {
        return;
    }
    let (mut child, address) = listening(
        &["up", "--port", "0", "--min", "2", "--slots-per-server", "1"],
        &[],
    );
    let (_, health) = http(&address, "GET", "/v1/health", "");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        (health["servers"].as_u64(), health["slots"].as_u64()),
        (Some(2), Some(2))
    );
    let lease_id = lease(&address);
    let (status, body) = http(
        &address,
        "POST",
        &format!("/v1/leases/{lease_id}/exec"),
        r#"{"command": "echo pooled; hostname"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pooled\\nslotbox\\n"), "{body}");
    let pool_pid = child.id() as i32;
    let servers = super::up::children_of(child.id());
    assert_eq!(servers.len(), 2, "two server processes");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pool_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    // No `slotbox serve` of this pool is left (pids taken before the stop: after it, orphans
    // would have a new parent).
    for pid in servers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "a sandbox server outlived its pool"
        );
    }
}
