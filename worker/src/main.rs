//! Starts a worker process. See the crate docs of `worker`.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init("worker");
    let settings =
        shared::config::Settings::from_env().context("while reading the configuration")?;
    if let Some(addr) = settings.metrics_addr {
        tokio::spawn(shared::telemetry::serve_metrics(
            addr,
            shared::shutdown_signal(),
        ));
    }
    shared::telemetry::metrics_handle();
    worker::run(settings, shared::shutdown_signal()).await
}
