//! The rules of each feature, apart from HTTP: what a request may do and
//! what it writes. Routes ([`crate::routes`]) parse a request, call one
//! service function and shape its answer; services call the db layer
//! ([`shared::db`]) and each other, never a route.
//!
//! * [`broadcasts`]: system messages to every organisation's subscribers.
//! * [`lookups`]: reference values platform admins edit.
//! * [`sessions`]: signing in, refreshing a session's tokens, revoking
//!   sessions.
//! * [`topics`]: finding a topic by key.
//! * [`workflows`]: saving workflow definitions and triggering runs.

pub mod broadcasts;
pub mod lookups;
pub mod sessions;
pub mod topics;
pub mod workflows;
