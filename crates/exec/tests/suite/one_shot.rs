//! One-shot mode: nothing carries over.

use pretty_assertions::assert_eq;
use slotbox_exec::ExecRequest;
use slotbox_exec::SessionConfig;
use slotbox_exec::exec_once;

use super::backends;

#[tokio::test]
async fn one_shot_calls_share_no_state() {
    for backend in backends().await {
        let workspace = tempfile::tempdir().unwrap();
        let backend = super::at(&backend, workspace.path());
        let config = SessionConfig::new(backend.clone(), workspace.path());
        let r = exec_once(
            &config,
            &ExecRequest::new("export X=1; f() { :; }; cd /; echo $X"),
        )
        .await
        .unwrap();
        assert_eq!(r.output, "1\n", "{backend:?}");
        let r = exec_once(
            &config,
            &ExecRequest::new("echo \"${X:-unset}\"; type f >/dev/null 2>&1 || echo nofn; pwd"),
        )
        .await
        .unwrap();
        let ws = backend.workspace_path(workspace.path()).unwrap();
        assert_eq!(r.output, format!("unset\nnofn\n{ws}\n"), "{backend:?}");
        assert_eq!(r.cwd, ws);
    }
}

#[tokio::test]
async fn one_shot_timeout_and_exit_code() {
    for backend in backends().await {
        let workspace = tempfile::tempdir().unwrap();
        let backend = super::at(&backend, workspace.path());
        let config = SessionConfig::new(backend.clone(), workspace.path());
        let r = exec_once(&config, &ExecRequest::new("exit 7"))
            .await
            .unwrap();
        assert_eq!(r.exit_code, 7);
        // A remote command needs a round trip before its first output can arrive.
        let (limit, notice) = match backend {
            slotbox_exec::Backend::Ssh(_) => (2000, "2s"),
            _ => (200, "0.2s"),
        };
        let request = ExecRequest::new("echo x; sleep 5").timeout(Some(
            slotbox_exec::Timeout::new(std::time::Duration::from_millis(limit)),
        ));
        let r = exec_once(&config, &request).await.unwrap();
        assert_eq!(
            (r.exit_code, r.output.as_str()),
            (
                124,
                format!("x\n\n[Command timed out after {notice}]").as_str()
            )
        );
    }
}
