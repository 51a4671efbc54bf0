//! Workflows: an organisation's multi-step notification journeys.
//!
//! A workflow is a list of named steps, checked here when it is saved (pure,
//! no I/O; the API adds the checks that read Postgres, such as whether a
//! template exists). Every problem names its step, field and reason, so a
//! caller fixes a definition in one round trip. The steps as stored are the
//! [`Step`] values below; the scheduler's runner executes them.
//!
//! Control flow only moves forward: a branch jumps to a later step (or
//! ends the run), so a run executes each step at most once and a workflow
//! cannot loop.

use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::{Channel, EmailAddress, PhoneNumber};

mod parse;

pub use parse::parse_steps;

/// Most steps in a workflow.
pub const MAX_STEPS: usize = 50;
/// Longest duration a step may name (delays, timeouts, windows): a year.
pub const MAX_DURATION_SECS: i64 = 365 * 24 * 3600;
/// Largest trigger or event payload, serialised as JSON.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// The branch target that ends the run.
pub const END: &str = "end";

/// One step of a workflow version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The step's name, unique in the workflow.
    pub key: String,
    /// What it does.
    #[serde(flatten)]
    pub kind: StepKind,
}

/// The step types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepKind {
    /// Send a template on one or more channels to the run's subscriber (or,
    /// with `to`, to a fixed address on one channel).
    Send {
        /// The template's key.
        template: String,
        /// The channels, each a notification of its own.
        channels: Vec<Channel>,
        /// A fixed address instead of the subscriber's (one channel).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// Wait before the next step.
    Delay(Delay),
    /// Wait for a send step's notification to reach a status, or for an
    /// event the caller posts, at most `timeout_secs`.
    WaitFor {
        /// What ends the wait early.
        #[serde(flatten)]
        on: WaitOn,
        /// Seconds after which the wait ends as `timed_out`.
        timeout_secs: i64,
    },
    /// Jump to a later step (or the end) when the condition holds; go on
    /// to the next step otherwise.
    Branch {
        /// The condition.
        #[serde(rename = "if")]
        condition: Condition,
        /// A later step's key, or `end`.
        then: String,
    },
    /// Collect the triggers of one subscriber (and digest key) over a
    /// window; the first run continues once, with all of them.
    Digest {
        /// Seconds the window stays open from its first trigger.
        window_secs: i64,
        /// A payload field whose value splits digests (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_by: Option<String>,
    },
    /// Let at most `limit` runs per subscriber through in `window_secs`.
    Throttle {
        /// Runs let through per window.
        limit: i64,
        /// The sliding window, seconds.
        window_secs: i64,
        /// What happens to the others.
        on_limit: OnLimit,
    },
}

/// When a delay ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delay {
    /// A fixed number of seconds.
    DurationSecs(i64),
    /// The timestamp (RFC 3339) in a payload field.
    UntilField(String),
    /// The next time the clock shows `HH:MM` in the subscriber's zone (the
    /// organisation's when they have none; UTC when neither has one).
    UntilLocalTime(String),
}

/// What a wait-for step waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WaitOn {
    /// A status of the notifications of an earlier send step.
    Status {
        /// The send step.
        step: String,
        /// The status.
        status: WaitStatus,
    },
    /// An event posted for the run's subscriber.
    Event {
        /// Its name.
        event: String,
    },
}

/// Notification statuses a wait can end on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitStatus {
    /// Read in the inbox (in-app).
    Read,
    /// Delivered (or read).
    Delivered,
    /// Handed to the provider (or later).
    Sent,
}

impl WaitStatus {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Delivered => "delivered",
            Self::Sent => "sent",
        }
    }
}

/// What a throttle does with a run over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    /// The run ends as `dropped`.
    Drop,
    /// The run ends as `merged`: its payload joins the `digest.items` of
    /// the subscriber's latest run that passed and is still going (dropped
    /// when there is none).
    Merge,
}

/// A branch's condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    /// An earlier step ended with this outcome.
    Outcome {
        /// The step.
        step: String,
        /// The outcome (`met`, `timed_out`, `sent`, `skipped`, …).
        outcome: String,
    },
    /// A payload field compared with a value.
    Field {
        /// The payload field, dotted (`appointment.kind`).
        field: String,
        /// The comparison.
        op: Op,
        /// The value (not used by `exists`/`missing`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
    },
}

/// Comparisons of a payload field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal (JSON equality).
    Eq,
    /// Not equal.
    Ne,
    /// Greater (numbers, or strings by their characters).
    Gt,
    /// Greater or equal.
    Gte,
    /// Less.
    Lt,
    /// Less or equal.
    Lte,
    /// The field is present and not null.
    Exists,
    /// The field is absent or null.
    Missing,
}

/// The outcomes each step type can end with (what branches may test).
pub fn outcomes(kind: &StepKind) -> &'static [&'static str] {
    match kind {
        StepKind::Send { .. } => &["sent", "skipped"],
        StepKind::Delay(_) => &["done"],
        StepKind::WaitFor { .. } => &["met", "timed_out"],
        StepKind::Branch { .. } => &["taken", "not_taken"],
        StepKind::Digest { .. } => &["collected"],
        StepKind::Throttle { .. } => &["passed"],
    }
}

/// The value at a dotted `path` of `payload`.
pub fn lookup<'a>(payload: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(payload, |v, part| v.get(part))
        .filter(|v| !v.is_null())
}

/// Evaluates a field comparison on `payload`.
pub fn compare(payload: &Value, field: &str, op: Op, value: Option<&Value>) -> bool {
    let got = lookup(payload, field);
    let ordering = || match (got?, value?) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    };
    use std::cmp::Ordering::*;
    match op {
        Op::Exists => got.is_some(),
        Op::Missing => got.is_none(),
        Op::Eq => got == value.filter(|v| !v.is_null()),
        Op::Ne => got != value.filter(|v| !v.is_null()),
        Op::Gt => ordering() == Some(Greater),
        Op::Gte => matches!(ordering(), Some(Greater | Equal)),
        Op::Lt => ordering() == Some(Less),
        Op::Lte => matches!(ordering(), Some(Less | Equal)),
    }
}

/// The template data of a send step: the trigger's payload, with
/// `digest` (`count`, `items`) when the run collected a digest and `event`
/// when a wait ended on one.
pub fn template_data(payload: &Value, digest: Option<&Value>, event: Option<&Value>) -> Value {
    let mut data = match payload {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if let Some(Value::Array(items)) = digest {
        data.insert(
            "digest".into(),
            serde_json::json!({"count": items.len(), "items": items}),
        );
    }
    if let Some(e) = event {
        data.insert("event".into(), e.clone());
    }
    Value::Object(data)
}

/// Where a delay ends, from `now`; `Err` says why it cannot be computed
/// (a payload field that is missing or no timestamp).
pub fn delay_end(
    delay: &Delay,
    payload: &Value,
    zone: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    match delay {
        Delay::DurationSecs(s) => Ok(now + chrono::Duration::seconds(*s)),
        Delay::UntilField(path) => {
            let raw = lookup(payload, path)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("the payload has no timestamp at `{path}`"))?;
            let at = DateTime::parse_from_rfc3339(raw)
                .map_err(|_| format!("`{path}` is not an RFC 3339 timestamp"))?
                .with_timezone(&Utc);
            if at > now + chrono::Duration::seconds(MAX_DURATION_SECS) {
                return Err(format!("`{path}` is more than a year ahead"));
            }
            Ok(at.max(now))
        }
        Delay::UntilLocalTime(hh_mm) => {
            let start = crate::send_windows::parse_hh_mm(hh_mm)
                .ok_or_else(|| format!("`{hh_mm}` is not HH:MM"))?;
            let end = start + chrono::Duration::minutes(1);
            let minute = crate::send_windows::Window { start, end };
            Ok(minute.next_opening(zone, now).unwrap_or(now))
        }
    }
}

/// Checks a fixed address of a send step for `channel`.
pub fn check_address(channel: Channel, to: &str) -> Result<String, String> {
    match channel {
        Channel::Email => EmailAddress::parse(to)
            .map(|e| e.as_str().to_owned())
            .map_err(|e| e.0),
        Channel::Sms | Channel::WhatsApp => PhoneNumber::parse(to)
            .map(|p| p.as_str().to_owned())
            .map_err(|e| e.0),
        _ => Err("a fixed address serves email, sms or whatsapp".into()),
    }
}

/// The local time a `HH:MM` names (checked on save).
pub fn local_time(s: &str) -> Option<NaiveTime> {
    crate::send_windows::parse_hh_mm(s)
}

#[cfg(test)]
mod tests;
