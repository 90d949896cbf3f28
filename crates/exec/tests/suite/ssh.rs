//! The ssh backend beyond the shared contract: what only a remote command can get wrong.

use pretty_assertions::assert_eq;

use super::fixture;
use super::ssh;

#[tokio::test]
async fn a_background_job_keeps_running_and_writing_after_its_call_returned() {
    let Some(backend) = ssh() else { return };
    let mut f = fixture(&backend).await;
    // The job holds the call's stdout (the ssh channel) and writes to it after the call.
    let r = f
        .run("(sleep 0.5; echo late; touch written) & echo now")
        .await;
    assert_eq!((r.exit_code, r.output.as_str()), (0, "now\n"));
    let file = f.workspace.path().join("written");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the background job died (SIGPIPE) when its call returned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_late_kill_never_hits_a_later_call() {
    let Some(backend) = ssh() else { return };
    let mut f = fixture(&backend).await;
    let tag = format!("slotbox_bg_{}", std::process::id());
    // A background job of one call, then a call cut short at once by its timeout.
    f.run(&format!("(exec -a {tag} sleep 60) >/dev/null 2>&1 &"))
        .await;
    let r =
        f.exec(slotbox_exec::ExecRequest::new("sleep 5").timeout(Some(
            slotbox_exec::Timeout::new(std::time::Duration::from_millis(1)),
        )))
        .await;
    assert_eq!(r.exit_code, 124);
    // The earlier call's job was not in the killed group.
    assert!(
        super::process_alive(&tag),
        "a kill reached an earlier call's job"
    );
    f.run(&format!("pkill -f {tag}")).await;
}
