//! Test support for the platform's black-box tests.
//!
//! * [`db::TestDb`]: a fresh Postgres database per test, cloned from a
//!   migrated template, dropped afterwards.
//! * [`smtp::SmtpServer`]: a real SMTP server on a free port (the protocol
//!   is spoken by the `mailin` state machine) that records what arrived and
//!   can be told to refuse, hold or vanish.
//! * [`proxy::TcpProxy`]: a TCP proxy that can be cut and restored, to take
//!   Redis away from the platform without touching the shared Redis.
//! * [`jwks::JwksServer`]: an OIDC provider's JWKS endpoint, with test keys.
//! * [`providers::FakeProviders`]: Twilio, SendGrid, FCM and WhatsApp
//!   stand-ins that check requests and answer as documented.
//! * [`webhooks::Receiver`]: an organisation's webhook endpoint that
//!   records signed deliveries and answers with scripted status codes.
//! * [`alerting::FakeTarget`]: Slack, PagerDuty and other stand-ins for alert
//!   delivery.
//! * [`ups::FakeUps`]: UPS's OAuth token endpoint and Track API.
//! * [`bench`]: what the benchmarks share (settings, machine size, figure
//!   lines, Postgres CPU time).
//! * [`process`]: the workspace's binaries as child processes (found by
//!   [`process::binary`]), with JSON logs or SIGTERMed and their output
//!   collected.
//! * [`app::TestApp`]: the api, worker and scheduler in-process on port 0,
//!   with their own database, Redis key prefix and SMTP server, plus helpers
//!   to drive the API.
//!
//! Tests run in parallel: nothing here flushes Redis or touches another
//! test's database.

pub mod alerting;
pub mod app;
pub mod bench;
pub mod db;
pub mod jwks;
pub mod process;
pub mod providers;
pub mod proxy;
pub mod smtp;
pub mod ups;
pub mod webhooks;

pub use app::{TestApp, TestAppBuilder, spawn_app};

/// The repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo root")
}

/// Postgres server URL without a database (`TEST_DATABASE_URL`).
pub fn postgres_server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Redis URL (`TEST_REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Serves `app` on a free port of 127.0.0.1 (`what` names it if the port
/// cannot be bound); the address and the server's task.
pub(crate) async fn serve_locally(
    app: impl poem::Endpoint + 'static,
    what: &str,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = listener.local_addr().expect("addr");
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).expect("acceptor");
    let task = tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    });
    (addr, task)
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after
/// `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
