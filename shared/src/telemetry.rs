//! Logs and metrics, set up once per process.
//!
//! Logs go through `tracing`: human-readable by default, JSON lines when
//! `LOG_FORMAT=json`, filtered by `RUST_LOG` (default `info`). Recipients,
//! subjects, bodies, tokens and credentials are never logged at info or above:
//! spans carry ids only.
//!
//! Metrics go through the `metrics` facade into one Prometheus recorder per
//! process; [`metrics_handle`] renders them for `/metrics`.

use std::{net::SocketAddr, sync::OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global log subscriber. Safe to call more than once; only the
/// first call takes effect. Under `cargo test` logs are silent unless
/// `TEST_LOG` is set.
pub fn init(service: &'static str) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
        let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
        let registry = tracing_subscriber::registry().with(filter);
        let result = if json {
            registry
                .with(
                    fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true),
                )
                .try_init()
        } else {
            registry.with(fmt::layer().with_target(false)).try_init()
        };
        if result.is_ok() {
            tracing::debug!(service, "logging initialised");
        }
    });
}

/// Installs logging for tests: silent unless `TEST_LOG` is set.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init("test");
    }
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            // Accepted → sent spans retries, quiet hours and send windows.
            let latency = [
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                21600.0, 86400.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("notification_latency_seconds".into()),
                    &latency,
                )
                .expect("the bucket list is not empty")
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // A recorder installed earlier in this process (another service
            // started in the same test binary) keeps serving; this handle then
            // renders an empty page, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Serves `/metrics` and `/health/live` on `addr` until `shutdown` resolves
/// (worker and scheduler; the API serves both on its own port).
pub async fn serve_metrics(
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use poem::{EndpointExt, Route, get, handler, listener::TcpListener};

    #[handler]
    fn render() -> poem::Response {
        poem::Response::builder()
            .content_type("text/plain; version=0.0.4")
            .body(metrics_handle().render())
    }

    #[handler]
    fn live() -> &'static str {
        "ok"
    }

    let app = Route::new()
        .at("/metrics", get(render))
        .at("/health/live", get(live))
        .boxed();
    poem::Server::new(TcpListener::bind(addr))
        .run_with_graceful_shutdown(app, shutdown, Some(std::time::Duration::from_secs(1)))
        .await
}
