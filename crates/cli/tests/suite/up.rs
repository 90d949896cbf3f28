//! `slotbox up` as a process: stopping it under load leaves no process and no container, and
//! killing it leaves no server or command of its own.

use std::io::Read;
use std::io::Write;
use std::time::Duration;
use std::time::Instant;

use super::backends;
use super::process_alive;
use super::serve::http;
use super::serve::lease;
use super::serve::listening;
use slotbox_test_support::count_named;
use slotbox_test_support::count_processes;

/// Children of `parent` (their pids).
pub(super) fn children_of(parent: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// Starts `slotbox up ARGS`, puts four clients each on a slot running a long command, stops
/// the pool with SIGTERM, and checks that every client got an answer, the pool exited, and no
/// command or server process is left. Returns the pool's server processes seen before the stop.
fn stop_under_load(args: &[&str]) {
    let tag = format!("slotbox-up-load-{}", uuid_like());
    let mut full = vec!["up", "--port", "0", "--min", "2", "--slots-per-server", "2"];
    full.extend_from_slice(args);
    let (mut pool, address) = listening(&full, &[]);
    let servers_before = children_of(pool.id());
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let address = address.clone();
            let tag = tag.clone();
            std::thread::spawn(move || {
                let lease_id = lease(&address);
                let started = Instant::now();
                let answer = http(
                    &address,
                    "POST",
                    &format!("/v1/leases/{lease_id}/exec"),
                    &format!(r#"{{"command": "exec -a {tag} sleep 120", "timeout_s": 300}}"#),
                );
                (answer, started.elapsed())
            })
        })
        .collect();
    // All four commands run (on both servers) before the stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_processes(&tag) < 4 {
        assert!(Instant::now() < deadline, "the four commands never all ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pool.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = pool.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the pool did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    for client in clients {
        let ((status, body), waited) = client.join().unwrap();
        // Answered (the command was killed, not completed), well before its 120 s.
        assert!(
            waited < Duration::from_secs(60),
            "a client waited {waited:?}"
        );
        assert!(
            status == 200 && !body.contains(r#""exit_code":0"#) || status >= 400,
            "{status} {body}"
        );
    }
    assert!(!process_alive(&tag), "a command outlived the pool");
    for pid in servers_before {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "server process {pid} outlived the pool"
        );
    }
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn stopping_a_local_pool_under_load_leaves_no_process() {
    if !backends().contains(&"bwrap") {
        return;
    }
    stop_under_load(&[]);
}

/// Whether process `pid` runs (a zombie does not: once its parent is gone, reaping it is up to
/// whoever adopted it).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// A pool killed with SIGKILL cannot stop its servers. They stop themselves: the pool holds a pipe
/// on each server's standard input, the kernel closes it when the pool dies, and a server that
/// sees its end stops as on SIGTERM, killing its slots' commands, background jobs included.
/// Without that, the servers and their background jobs would run on, unowned (a command in
/// flight dies anyway: its call's connection closes).
#[test]
fn a_killed_local_pool_takes_its_servers_and_their_commands_along() {
    if !backends().contains(&"bwrap") {
        return;
    }
    let tag = format!("slotbox-up-kill-{}", uuid_like());
    let (mut pool, address) = listening(
        &["up", "--port", "0", "--min", "2", "--slots-per-server", "1"],
        &[],
    );
    let servers = children_of(pool.id());
    assert_eq!(
        servers.len(),
        2,
        "expected two server processes: {servers:?}"
    );
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let address = address.clone();
            let tag = tag.clone();
            std::thread::spawn(move || {
                let lease_id = lease(&address);
                // A background job, which no call holds on to…
                let (status, answer) = http(
                    &address,
                    "POST",
                    &format!("/v1/leases/{lease_id}/exec"),
                    &format!(
                        r#"{{"command": "(exec -a {tag}-background sleep 120) >/dev/null 2>&1 &"}}"#
                    ),
                );
                assert_eq!(status, 200, "{answer}");
                // …and a call in flight. The pool dies mid-call: the answer is a closed
                // connection, so only that the client comes back matters.
                let body = format!(r#"{{"command": "exec -a {tag} sleep 120", "timeout_s": 300}}"#);
                let mut stream = std::net::TcpStream::connect(&address).unwrap();
                write!(
                    stream,
                    "POST /v1/leases/{lease_id}/exec HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                let _ = stream.read_to_end(&mut Vec::new());
            })
        })
        .collect();
    // Both foreground commands run (so both background calls were answered before), and both
    // background jobs: counted by their own names, not by command lines that mention them (a
    // session's wrapper shell carries the command text while it starts).
    let background = format!("{tag}-background");
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_named(&tag) < 2 || count_named(&background) < 2 {
        assert!(Instant::now() < deadline, "the four commands never all ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    pool.kill().unwrap();
    pool.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while servers.iter().any(|&pid| running(pid)) || process_alive(&tag) {
        assert!(
            Instant::now() < deadline,
            "30 s after the pool's death: servers running {:?}, commands left {}",
            servers
                .iter()
                .filter(|&&pid| running(pid))
                .collect::<Vec<_>>(),
            count_processes(&tag)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for client in clients {
        client.join().unwrap();
    }
}

#[test]
fn stopping_a_docker_pool_under_load_leaves_no_container() {
    let image =
        std::env::var("SLOTBOX_TEST_IMAGE").unwrap_or_else(|_| "slotbox-sandbox:test".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let docker = runtime.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults()
            .map_err(|error| error.to_string())?
            .negotiate_version()
            .await
            .map_err(|error| error.to_string())?;
        docker
            .inspect_image(&image)
            .await
            .map_err(|error| format!("image {image}: {error} (scripts/build-image.sh)"))?;
        Ok::<_, String>(docker)
    });
    let probe = docker.as_ref().map(|_| ()).map_err(Clone::clone);
    if !slotbox_test_support::require("the Docker Engine and the sandbox image", probe) {
        return;
    }
    let docker = docker.unwrap();
    let pool_name = format!("test-up-{}", uuid_like());
    stop_under_load(&[
        "--scheduler",
        "docker",
        "--image",
        &image,
        "--pool-name",
        &pool_name,
    ]);
    let left = runtime.block_on(async {
        docker
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(std::collections::HashMap::from([(
                    "label".to_owned(),
                    vec![format!("io.slotbox.pool={pool_name}")],
                )])),
                ..Default::default()
            }))
            .await
            .unwrap()
    });
    assert!(left.is_empty(), "containers outlived the pool: {left:?}");
}
