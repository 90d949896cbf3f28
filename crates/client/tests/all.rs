//! The client against a real `slotbox-server` on loopback (no isolation: these tests are about
//! the HTTP contract; isolation is the server's own tests' business).

// Test helpers outside #[test] functions: a failed setup step should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pretty_assertions::assert_eq;
use slotbox_client::Client;
use slotbox_client::ErrorCode;
use slotbox_protocol::v1::CreateLease;
use slotbox_protocol::v1::ExecBody;

async fn serve(slots: usize, token: Option<&str>) -> (String, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let config = slotbox_server::ServerConfig {
        slots,
        data_dir: data.path().join("data"),
        isolation: slotbox_server::Isolation::None,
        token: token.map(str::to_owned),
        limits: slotbox_server::Limits::default(),
    };
    let state = slotbox_server::AppState::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(slotbox_server::serve(
        listener,
        state,
        std::future::pending(),
    ));
    (format!("http://{address}"), data)
}

fn command(text: &str) -> ExecBody {
    ExecBody::new(text)
}

#[tokio::test]
async fn lease_exec_files_renew_release() {
    let (base, _data) = serve(1, None).await;
    let client = Client::new(&base);
    assert_eq!(client.health().await.unwrap().slots, 1);
    let lease = client.lease(&CreateLease::default()).await.unwrap();
    let result = client
        .exec(&lease.lease_id, &command("export X=7; echo $X"))
        .await
        .unwrap();
    assert_eq!(result.output, "7\n");
    let result = client
        .exec(&lease.lease_id, &command("echo $X"))
        .await
        .unwrap();
    assert_eq!(result.output, "7\n");
    client
        .write_file(&lease.lease_id, "dir/f.bin", vec![0, 1, 2, 255])
        .await
        .unwrap();
    assert_eq!(
        client
            .read_file(&lease.lease_id, "dir/f.bin")
            .await
            .unwrap(),
        vec![0, 1, 2, 255]
    );
    let renewed = client
        .renew(&lease.lease_id, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert_eq!(renewed.lease_id, lease.lease_id);
    assert!(!client.interrupt(&lease.lease_id).await.unwrap());
    let released = client.release(&lease.lease_id).await.unwrap();
    assert_eq!(released.slot_id, lease.slot_id);
    let error = client
        .exec(&lease.lease_id, &command("true"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::UnknownLease));
}

#[tokio::test]
async fn typed_errors() {
    let (base, _data) = serve(1, Some("secret")).await;
    let anonymous = Client::new(&base);
    let error = anonymous.lease(&CreateLease::default()).await.unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::Unauthorized));
    let client = Client::new(&base).with_token("secret");
    let _held = client.lease(&CreateLease::default()).await.unwrap();
    let error = client
        .lease(&CreateLease {
            wait_s: Some(0.2),
            ..CreateLease::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::NoSlot));
    let error = client.read_file(&_held.lease_id, "../x").await.unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::PathOutsideWorkspace));
    let unreachable = Client::new("http://127.0.0.1:9");
    assert!(matches!(
        unreachable.health().await.unwrap_err(),
        slotbox_client::Error::Transport { .. }
    ));
}

#[tokio::test]
async fn streaming_exec_delivers_chunks_then_the_result() {
    let (base, _data) = serve(1, None).await;
    let client = Client::new(&base);
    let lease = client.lease(&CreateLease::default()).await.unwrap();
    let mut streamed = String::new();
    let result = client
        .exec_streaming(
            &lease.lease_id,
            &command("for i in 1 2 3; do echo line$i; sleep 0.05; done; exit 3"),
            |chunk| streamed.push_str(chunk),
        )
        .await
        .unwrap();
    assert_eq!(streamed, "line1\nline2\nline3\n");
    assert_eq!(
        (result.exit_code, result.output.as_str()),
        (3, "line1\nline2\nline3\n")
    );
}

#[tokio::test]
async fn long_commands_are_not_cut_by_a_client_deadline() {
    let (base, _data) = serve(1, None).await;
    let client = Client::new(&base);
    let lease = client.lease(&CreateLease::default()).await.unwrap();
    // The command's own timeout governs; the client allows it plus a margin.
    let body = ExecBody {
        timeout_s: Some(1.0),
        ..command("sleep 5; echo never")
    };
    let result = client.exec(&lease.lease_id, &body).await.unwrap();
    assert_eq!(result.exit_code, 124);
    assert!(result.timed_out);
}
