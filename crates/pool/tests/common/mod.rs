//! What the pool's test crates share: a pool with its servers, served on loopback.

use std::sync::Arc;

use slotbox_client::Client;
use slotbox_pool::Pool;

/// Starts `pool`'s background work and `servers` servers, serves its router on loopback;
/// returns a client of it and its base URL.
pub(crate) async fn fill_and_serve(pool: &Arc<Pool>, servers: usize) -> (Client, String) {
    slotbox_pool::start_background(pool);
    for _ in 0..servers {
        pool.add_server().await.unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = slotbox_pool::router(Arc::clone(pool), None);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{address}");
    (Client::new(&base), base)
}
