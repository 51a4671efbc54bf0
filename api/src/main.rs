//! Starts the API, or runs an admin command. See the crate docs of `api`.

use anyhow::Context;
use clap::Parser;

/// jemalloc gives memory back to the system after a burst (a large batch
/// accepted, a CSV streamed in); glibc's allocator kept what those bursts
/// freed, so the API stayed at its high-water mark.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = api::cli::Cli::parse();
    shared::telemetry::init("api");
    let settings =
        shared::config::Settings::from_env().context("while reading the configuration")?;
    match cli.command.unwrap_or(api::cli::Command::Serve) {
        api::cli::Command::Serve => api::run(settings, shared::shutdown_signal()).await,
        other => api::cli::admin(&settings, other).await,
    }
}
