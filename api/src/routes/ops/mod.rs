//! `/api/v1/ops/*`: what operators use to run the platform — queues and
//! their throughput, failed work with retry and discard, pausing, the
//! worker fleet, the scheduler, providers, real-time connections, caches
//! and search. A platform admin sees and acts on everything; an
//! organisation admin sees and acts on its own organisation only.

pub mod failed;
pub mod fleet;
pub mod queues;
pub mod search;
