//! Helpers: a server on a temporary data dir, and one-call HTTP requests against its router.

mod v0_compat;
mod v1_bad_input;
mod v1_files;
mod v1_isolation;
mod v1_leases;
mod v1_stream;

use axum::body::Body;
use axum::http::Request;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;
use slotbox_server::AppState;
use slotbox_server::Isolation;
use slotbox_server::Limits;
use slotbox_server::ServerConfig;
use tower::ServiceExt;

/// A server and its data directory.
pub(crate) struct TestServer {
    pub(crate) client: Client,
    pub(crate) data: tempfile::TempDir,
}

/// Sends requests to a server's router (cheap to clone into spawned tasks).
#[derive(Clone)]
pub(crate) struct Client {
    router: axum::Router,
    token: Option<String>,
}

impl std::ops::Deref for TestServer {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl TestServer {
    /// The slot's workspace on the host.
    pub(crate) fn workspace(&self, slot_id: &str) -> std::path::PathBuf {
        self.data.path().join("data").join(slot_id)
    }
}

/// A server with `slots` bwrap-isolated slots; `None` (test skipped) where bwrap is unavailable
/// outside CI.
pub(crate) async fn server(slots: usize) -> Option<TestServer> {
    server_with(slots, None, Limits::default()).await
}

pub(crate) async fn server_with(
    slots: usize,
    token: Option<&str>,
    limits: Limits,
) -> Option<TestServer> {
    let data = tempfile::tempdir().unwrap();
    let mut bwrap = slotbox_exec::BubblewrapConfig::default();
    // The production setup: each slot session keeps one sandbox with the agent inside.
    let agent = slotbox_test_support::workspace_binary("slotbox-sandbox-agent");
    let agent = match agent {
        Ok(path) => path,
        Err(reason) => {
            slotbox_test_support::require("the sandbox agent binary", Err(reason));
            return None;
        }
    };
    bwrap.agent = Some(slotbox_exec::AgentCommand {
        program: agent,
        args: Vec::new(),
    });
    // Resource limits as in production (cgroups are required in CI).
    let layout = match slotbox_exec::CgroupLayout::detect() {
        Ok(layout) => layout,
        Err(error) => {
            slotbox_test_support::require("writable cgroups", Err(error.to_string()));
            return None;
        }
    };
    bwrap.limits = Some(slotbox_exec::SandboxLimits {
        layout,
        limits: slotbox_exec::CgroupLimits {
            memory_bytes: Some(1024 * 1024 * 1024),
            pids: Some(512),
            cpu_millis: Some(2000),
        },
    });
    let layout = slotbox_exec::probe::host_layout().unwrap();
    let probe = slotbox_exec::probe::bubblewrap(&bwrap, &layout, data.path())
        .await
        .map_err(|error| error.to_string());
    if !slotbox_test_support::require("bubblewrap", probe) {
        return None;
    }
    let config = ServerConfig {
        slots,
        data_dir: data.path().join("data"),
        isolation: Isolation::Bubblewrap(bwrap),
        token: token.map(str::to_owned),
        limits,
    };
    let state = AppState::new(config).unwrap();
    Some(TestServer {
        client: Client {
            router: slotbox_server::router(state),
            token: token.map(str::to_owned),
        },
        data,
    })
}

/// A server whose slots are containers (the docker backend), with the test image; `None`
/// (skipped) without an engine and the image outside CI.
pub(crate) async fn docker_server(slots: usize) -> Option<TestServer> {
    let agent = match slotbox_test_support::workspace_binary("slotbox-sandbox-agent") {
        Ok(path) => path,
        Err(reason) => {
            slotbox_test_support::require("the sandbox agent binary", Err(reason));
            return None;
        }
    };
    let image =
        std::env::var("SLOTBOX_TEST_IMAGE").unwrap_or_else(|_| "slotbox-sandbox:test".to_owned());
    let mut docker = slotbox_exec::DockerConfig::new(
        image,
        slotbox_exec::AgentCommand {
            program: agent,
            args: Vec::new(),
        },
    );
    docker.memory_bytes = Some(512 << 20);
    let data = tempfile::tempdir().unwrap();
    let probe = slotbox_exec::Session::start(slotbox_exec::SessionConfig::new(
        slotbox_exec::Backend::Docker(docker.clone()),
        data.path(),
    ))
    .await
    .map(drop)
    .map_err(|error| error.to_string());
    if !slotbox_test_support::require("the Docker Engine and the sandbox image", probe) {
        return None;
    }
    let config = ServerConfig {
        slots,
        data_dir: data.path().join("data"),
        isolation: Isolation::Docker(docker),
        token: None,
        limits: Limits::default(),
    };
    let state = AppState::new(config).unwrap();
    Some(TestServer {
        client: Client {
            router: slotbox_server::router(state),
            token: None,
        },
        data,
    })
}

/// A response: status and body (parsed as JSON when it is JSON, else the raw bytes as a string).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) json: Value,
    pub(crate) bytes: Vec<u8>,
}

impl Client {
    /// The same server, presenting `token` (or none).
    pub(crate) fn with_token(&self, token: Option<&str>) -> Client {
        Client {
            router: self.router.clone(),
            token: token.map(str::to_owned),
        }
    }

    pub(crate) async fn send(&self, method: &str, uri: &str, body: impl Into<Body>) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        self.raw(request.body(body.into()).unwrap()).await
    }

    /// The router, for calls that read the response body themselves.
    pub(crate) fn router(&self) -> RouterHandle {
        RouterHandle(self.router.clone())
    }

    pub(crate) async fn raw(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            json,
            bytes,
        }
    }

    pub(crate) async fn post(&self, uri: &str, body: Value) -> Reply {
        self.send("POST", uri, body.to_string()).await
    }

    /// Leases a slot; returns (lease_id, slot_id).
    pub(crate) async fn lease(&self) -> (String, String) {
        let reply = self.post("/v1/leases", serde_json::json!({})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.json);
        (
            reply.json["lease_id"].as_str().unwrap().to_owned(),
            reply.json["slot_id"].as_str().unwrap().to_owned(),
        )
    }

    pub(crate) async fn exec(&self, lease: &str, command: &str) -> Value {
        let reply = self
            .post(
                &format!("/v1/leases/{lease}/exec"),
                serde_json::json!({ "command": command }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        reply.json
    }
}

pub(crate) use slotbox_test_support::process_alive;

/// Polls `condition` (bounded) until it holds.
pub(crate) async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A router to send one request to, keeping the response body streaming.
pub(crate) struct RouterHandle(axum::Router);

impl RouterHandle {
    pub(crate) async fn oneshot_request(self, request: Request<Body>) -> axum::response::Response {
        self.0.oneshot(request).await.unwrap()
    }
}
