//! Process control: exit codes, timeouts, interrupts, background children, kills.

use std::time::Duration;
use std::time::Instant;

use pretty_assertions::assert_eq;
use slotbox_exec::ExecRequest;
use slotbox_exec::Interrupt;
use slotbox_exec::StallTimeout;
use slotbox_exec::Timeout;

use super::backends;
use super::fixture;
use super::process_alive;

fn secs(s: f64) -> Option<Timeout> {
    Some(Timeout::new(Duration::from_secs_f64(s)))
}

/// Waits (bounded) until `path` exists: the command under test creates it when it is running.
async fn wait_for_file(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A marker unique to this test run, to find its processes.
fn marker(tag: &str) -> String {
    format!(
        "{}{}",
        tag,
        std::process::id() as u64 * 1000 + rand_suffix()
    )
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn exit_codes_pass_through() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        assert_eq!(f.run("exit 3").await.exit_code, 3);
        assert_eq!(f.run("false").await.exit_code, 1);
        assert_eq!(f.run("no_such_command_xyz").await.exit_code, 127);
        let r = f.run("kill -9 $$").await;
        assert_eq!(r.exit_code, 137, "{backend:?}");
    }
}

#[tokio::test]
async fn timeout_returns_124_with_partial_output_and_kills_the_group() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let tag = marker("slotbox_to_");
        let started = Instant::now();
        let r = f
            .exec(
                ExecRequest::new(format!(
                    "echo before; (exec -a {tag} sleep 30) & sleep 30; echo never"
                ))
                .timeout(secs(0.5)),
            )
            .await;
        assert_eq!(r.exit_code, 124, "{backend:?}");
        assert!(r.timed_out);
        assert_eq!(r.output, "before\n\n[Command timed out after 0.5s]");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(
            !process_alive(&tag),
            "{backend:?}: background child survived the timeout"
        );
    }
}

#[tokio::test]
async fn timeout_without_output_has_no_leading_newline() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let r = f
            .exec(ExecRequest::new("sleep 10").timeout(secs(0.2)))
            .await;
        assert_eq!(r.output, "[Command timed out after 0.2s]", "{backend:?}");
    }
}

#[tokio::test]
async fn sigterm_ignoring_process_is_gone_within_two_seconds() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let tag = marker("slotbox_stubborn_");
        let started = Instant::now();
        let r = f
            .exec(
                ExecRequest::new(format!(
                    "trap '' TERM; (trap '' TERM; exec -a {tag} sleep 60) & wait"
                ))
                .timeout(secs(0.3)),
            )
            .await;
        assert_eq!(r.exit_code, 124);
        assert!(
            started.elapsed() < Duration::from_millis(2300),
            "{:?}",
            started.elapsed()
        );
        assert!(
            !process_alive(&tag),
            "{backend:?}: SIGTERM-ignoring child survived"
        );
    }
}

#[tokio::test]
async fn interrupt_returns_130_and_kills() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let interrupt = Interrupt::new();
        let trigger = interrupt.clone();
        let tag = marker("slotbox_int_");
        let request = ExecRequest::new(format!(
            "echo started; trap '' TERM; : > ready; exec -a {tag} sleep 60"
        ))
        .interrupt(interrupt);
        let ready = f.workspace.path().join("ready");
        let run = f.session.exec(&request);
        let fire = async {
            wait_for_file(&ready).await;
            trigger.trigger();
        };
        let started = Instant::now();
        let (r, ()) = tokio::join!(run, fire);
        let r = r.unwrap();
        assert_eq!(r.exit_code, 130, "{backend:?}");
        assert!(r.interrupted);
        assert_eq!(r.output, "started\n\n[Command interrupted]");
        assert!(started.elapsed() < Duration::from_millis(2500));
        assert!(!process_alive(&tag), "{backend:?}");
    }
}

#[tokio::test]
async fn stall_timeout_fires_on_silence_only() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let stall = StallTimeout::new(Duration::from_millis(1000));
        // Prints every 100 ms for 0.8 s: never silent for 1 s, so it completes.
        let r = f
            .exec(
                ExecRequest::new("for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.1; done")
                    .stall_timeout(stall),
            )
            .await;
        assert_eq!(r.exit_code, 0, "{backend:?}: {}", r.output);
        let r = f
            .exec(
                ExecRequest::new("echo prompt; read -r answer < /dev/tty || sleep 10")
                    .stall_timeout(stall),
            )
            .await;
        assert_eq!(r.exit_code, 124, "{backend:?}");
        assert!(r.timed_out);
        assert!(
            r.output.ends_with("[Command produced no output for 1s]"),
            "{}",
            r.output
        );
    }
}

#[tokio::test]
async fn background_child_holding_the_pipe_does_not_hang_the_call() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        // A remote call costs a round trip (and the remote shell's start-up) on its own; the
        // point is that nobody waits for the 30 s job.
        let bound = match backend {
            slotbox_exec::Backend::Ssh(_) => Duration::from_secs(5),
            _ => Duration::from_millis(600),
        };
        for command in [
            "sleep 30 & echo started",
            "setsid sleep 30 & disown; echo started",
            "nohup sleep 30 >/dev/stdout 2>&1 & echo started",
        ] {
            let started = Instant::now();
            let r = f.run(command).await;
            let elapsed = started.elapsed();
            assert_eq!(
                (r.exit_code, r.output.as_str()),
                (0, "started\n"),
                "{backend:?} {command}"
            );
            assert!(elapsed < bound, "{backend:?} {command}: took {elapsed:?}");
        }
    }
}

#[tokio::test]
async fn sigpipe_is_default_in_children() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let r = f
            .exec(ExecRequest::new("yes | head -n 2").timeout(secs(5.0)))
            .await;
        assert_eq!(
            (r.exit_code, r.output.as_str()),
            (0, "y\ny\n"),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn dropping_a_running_exec_kills_its_processes() {
    for backend in backends().await {
        let mut f = fixture(&backend).await;
        let tag = marker("slotbox_drop_");
        let request = ExecRequest::new(format!("echo go; : > ready; exec -a {tag} sleep 60"));
        let ready = f.workspace.path().join("ready");
        let run = f.session.exec(&request);
        // Abandon the call once the command is certainly running.
        let running = async {
            wait_for_file(&ready).await;
            // The sleep must have replaced the shell before the call is abandoned.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !process_alive(&tag) {
                assert!(Instant::now() < deadline, "the command never started");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            _ = run => panic!("the command cannot finish on its own"),
            () = running => {}
        }
        // SIGKILL is delivered synchronously by the guard; give the kernel a moment to reap.
        let deadline = Instant::now() + Duration::from_secs(2);
        while process_alive(&tag) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!process_alive(&tag), "{backend:?}");
    }
}
