//! The platform's system tests: each test starts the whole platform (api,
//! worker and scheduler, in-process through `testkit`, or as the real
//! binaries) against real Postgres, Redis and SMTP, with fake providers,
//! and drives it from outside. One test binary, so CI links it once.
//!
//! * [`http`]: what callers see through the HTTP API, by route area, and the
//!   api binary's command line, logs and operator console.
//! * [`delivery`]: what the worker does with queued work: deliveries,
//!   retries, cancels, housekeeping jobs and the worker process itself.
//! * [`support`]: what tests of both share.
//!
//! Tests that run the real binaries find them beside this test binary
//! (`testkit::process::binary`): `cargo build --workspace --bins` first, as
//! `.ci/test` does.

mod delivery;
mod http;
mod support;
