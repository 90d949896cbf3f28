//! The files API: raw bytes in and out, confined to the workspace.

use axum::http::StatusCode;
use pretty_assertions::assert_eq;

use super::server;

#[tokio::test]
async fn write_then_read_raw_bytes_and_see_them_in_the_sandbox() {
    let Some(s) = server(1).await else { return };
    let (lease, slot) = s.lease().await;
    let bytes: Vec<u8> = (0..=255).collect();
    let reply = s
        .send(
            "PUT",
            &format!("/v1/leases/{lease}/files?path=dir/sub/data.bin"),
            bytes.clone(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.json);
    let reply = s
        .send(
            "GET",
            &format!("/v1/leases/{lease}/files?path=dir/sub/data.bin"),
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes, bytes);
    assert_eq!(
        std::fs::read(s.workspace(&slot).join("dir/sub/data.bin")).unwrap(),
        bytes
    );
    let r = s.exec(&lease, "wc -c < dir/sub/data.bin").await;
    assert_eq!(r["output"], "256\n");
    // A file the command wrote, read back.
    s.exec(&lease, "printf 'from the sandbox' > out.txt").await;
    let reply = s
        .send("GET", &format!("/v1/leases/{lease}/files?path=out.txt"), "")
        .await;
    assert_eq!(reply.bytes, b"from the sandbox");
}

#[tokio::test]
async fn traversal_absolute_and_symlink_escapes_are_refused() {
    let Some(s) = server(1).await else { return };
    let (lease, slot) = s.lease().await;
    // Links planted from inside the sandbox, pointing at host files and directories.
    s.exec(
        &lease,
        "ln -s /etc/hostname host-file; ln -s /etc host-dir; ln -s ../.. up",
    )
    .await;
    let hostname_before = std::fs::read("/etc/hostname").unwrap_or_default();
    for path in [
        "../slot_1/x",
        "/etc/passwd",
        "host-file",
        "host-dir/passwd",
        "up/x",
        "a/../../x",
    ] {
        let reply = s
            .send("GET", &format!("/v1/leases/{lease}/files?path={path}"), "")
            .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "GET {path}: {:?}",
            reply.json
        );
        assert_eq!(reply.json["error"]["code"], "path_outside_workspace");
    }
    for path in [
        "../slot_1/x",
        "/etc/passwd",
        "host-dir/passwd",
        "up/x",
        "a/../../x",
    ] {
        let reply = s
            .send(
                "PUT",
                &format!("/v1/leases/{lease}/files?path={path}"),
                "pwned",
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "PUT {path}: {:?}",
            reply.json
        );
    }
    // A PUT onto a planted link replaces the link itself: the host file stays as it was.
    let reply = s
        .send(
            "PUT",
            &format!("/v1/leases/{lease}/files?path=host-file"),
            "mine",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        std::fs::read_to_string(s.workspace(&slot).join("host-file")).unwrap(),
        "mine"
    );
    assert!(
        !std::fs::symlink_metadata(s.workspace(&slot).join("host-file"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read("/etc/hostname").unwrap_or_default(),
        hostname_before
    );
}

#[tokio::test]
async fn missing_files_directories_and_bad_queries() {
    let Some(s) = server(1).await else { return };
    let (lease, _) = s.lease().await;
    s.exec(&lease, "mkdir adir").await;
    let reply = s
        .send(
            "GET",
            &format!("/v1/leases/{lease}/files?path=nope.txt"),
            "",
        )
        .await;
    assert_eq!(
        (reply.status, reply.json["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let reply = s
        .send("GET", &format!("/v1/leases/{lease}/files?path=adir"), "")
        .await;
    assert_eq!(
        (reply.status, reply.json["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("not_a_file"))
    );
    let reply = s
        .send("GET", &format!("/v1/leases/{lease}/files"), "")
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let reply = s
        .send("GET", "/v1/leases/nosuchlease/files?path=x", "")
        .await;
    assert_eq!(reply.json["error"]["code"], "unknown_lease");
}

#[tokio::test]
async fn a_planted_fifo_does_not_hang_reads() {
    let Some(s) = server(1).await else { return };
    let (lease, _) = s.lease().await;
    s.exec(&lease, "mkfifo trap.txt").await;
    let uri = format!("/v1/leases/{lease}/files?path=trap.txt");
    let read = s.send("GET", &uri, "");
    let reply = tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .expect("reading a FIFO hung");
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json["error"]["code"], "not_a_file");
}
