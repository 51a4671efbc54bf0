//! What callers see through the HTTP API, organised by route area: each
//! module sends real requests to a platform started by `testkit` and checks
//! the answers, the rows written and what arrives at SMTP, providers and
//! webhook endpoints. The api binary's command line (`cli`, `ops_failed::cli`),
//! its logs (`logs`), the deployment (`deploy`) and the operator console's
//! browser scenarios (`console`, scripts in `system-tests/console/`) are here
//! too. `org_support` is what the organisation, user and permission tests
//! share.

mod alerts;
mod api_key_networks;
mod audit;
mod batches;
mod bulk_csv;
mod caches;
mod callbacks;
mod cli;
mod client_address;
mod console;
mod deploy;
mod edge;
mod errors;
mod identity;
mod inbox;
mod invitations;
mod limit_events;
mod logs;
mod lookups;
mod operations;
mod ops_failed;
mod ops_fleet;
mod ops_queues;
mod org_support;
mod organizations;
mod permissions;
mod platform_scope;
mod preferences;
mod providers;
mod rate_limits;
mod realtime;
mod reports;
mod row_level_security;
mod send_email;
mod send_rules;
mod send_windows;
mod sessions;
mod shipments;
mod subscribers;
mod templates;
mod topics;
mod users;
mod webhooks;
mod workflows;
