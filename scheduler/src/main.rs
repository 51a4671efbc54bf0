//! Starts a scheduler process. See the crate docs of `scheduler`.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init("scheduler");
    let settings =
        shared::config::Settings::from_env().context("while reading the configuration")?;
    shared::telemetry::metrics_handle();
    if let Some(addr) = settings.metrics_addr {
        tokio::spawn(shared::telemetry::serve_metrics(
            addr,
            shared::shutdown_signal(),
        ));
    }
    scheduler::run(settings, shared::shutdown_signal()).await
}
