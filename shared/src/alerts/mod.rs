//! Alerts an organisation can act on: rules, the alerts they open, and who
//! hears about them.
//!
//! A [`Rule`] watches one [`Metric`] of one organisation (or of the whole
//! platform) and compares it with a threshold. The scheduler evaluates every
//! enabled rule every few seconds ([`evaluate`]), once per period however
//! many schedulers run. For each subject the metric names (a channel, a
//! queue, a provider channel, an organisation) an alert:
//!
//! * **opens once** while the condition holds (one unresolved alert per rule
//!   and subject, enforced by a unique index);
//! * **escalates** to the next level of the rule's escalation when it stays
//!   unacknowledged for that level's minutes, once per level;
//! * **resolves by itself** when the condition clears (recorded as `auto`),
//!   or when an admin resolves it;
//! * opens again for the same subject only after the rule's cooldown.
//!
//! Each transition is an [`alert_events`](crate::db::alerts) row with its
//! notifications: in-app and email to the organisation's admins through the
//! platform's own send path ([`crate::notices`]), inserted in the same
//! transaction; Slack, PagerDuty and signed webhooks as delivery rows the
//! scheduler posts with retries (`scheduler::alerts`).
//!
//! Default rules (high failure rate, stuck queue, breaker open, BAA
//! expiring) are created for every organisation the first time the
//! evaluator or the alert-rules API sees it ([`ensure_defaults`]); the
//! organisation can edit, disable or delete them, and a deleted default is
//! not created again.

pub mod evaluate;
mod measure;
pub mod notify;
pub mod rules;

pub use evaluate::{Evaluator, Report};
pub use rules::{
    ChannelSpec, Level, Metric, Rule, RuleInput, RuleSpec, Severity, ensure_defaults,
    ensure_defaults_across_tenants,
};
