//! Reading a workflow's steps from the caller's JSON, every problem named
//! by step (its key, or `steps[i]` while it has none), field and reason.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    Condition, Delay, END, MAX_DURATION_SECS, MAX_STEPS, OnLimit, Op, Step, StepKind, WaitOn,
    WaitStatus, check_address, local_time, outcomes,
};
use crate::domain::{Channel, key_ok};

/// One problem of a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepError {
    /// The step's key (`steps[i]` when it has no usable key; `steps` for
    /// the list as a whole).
    pub step: String,
    /// The field (`type`, `channels[1]`, `if.step`, …).
    pub field: String,
    /// Why.
    pub reason: String,
}

struct Errors(Vec<StepError>);

impl Errors {
    fn add(&mut self, step: &str, field: &str, reason: impl Into<String>) {
        self.0.push(StepError {
            step: step.to_owned(),
            field: field.to_owned(),
            reason: reason.into(),
        });
    }
}

/// A dotted payload path: 1 to 10 parts of 1 to 64 characters.
fn path_ok(path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    path.len() <= 300
        && parts.len() <= 10
        && parts
            .iter()
            .all(|p| (1..=64).contains(&p.len()) && !p.chars().any(char::is_control))
}

/// One step's object, read field by field.
struct Fields<'a> {
    step: String,
    map: &'a Map<String, Value>,
    used: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.used.push(name);
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn string(&mut self, e: &mut Errors, name: &'static str, max: usize) -> Option<String> {
        match self.get(name) {
            None => None,
            Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= max => {
                Some(s.clone())
            }
            Some(_) => {
                e.add(
                    &self.step,
                    name,
                    format!("must be a string of 1 to {max} characters"),
                );
                None
            }
        }
    }

    fn required_string(
        &mut self,
        e: &mut Errors,
        name: &'static str,
        max: usize,
    ) -> Option<String> {
        let v = self.string(e, name, max);
        if v.is_none() && self.map.get(name).is_none_or(Value::is_null) {
            e.add(&self.step, name, "is required");
        }
        v
    }

    fn seconds(&mut self, e: &mut Errors, name: &'static str, required: bool) -> Option<i64> {
        match self.get(name) {
            None if required => {
                e.add(&self.step, name, "is required");
                None
            }
            None => None,
            Some(v) => match v.as_i64() {
                Some(s @ 1..=MAX_DURATION_SECS) => Some(s),
                Some(s) if s > MAX_DURATION_SECS => {
                    e.add(
                        &self.step,
                        name,
                        format!("must be at most a year ({MAX_DURATION_SECS} seconds)"),
                    );
                    None
                }
                _ => {
                    e.add(
                        &self.step,
                        name,
                        "must be a whole number of seconds, at least 1",
                    );
                    None
                }
            },
        }
    }

    fn unknown(&self, e: &mut Errors) {
        for name in self.map.keys() {
            if !self.used.contains(&name.as_str()) {
                e.add(&self.step, name, "is not a field of this step type");
            }
        }
    }
}

/// Reads `steps`: a list of 1 to [`MAX_STEPS`] step objects.
pub fn parse_steps(steps: &Value) -> Result<Vec<Step>, Vec<StepError>> {
    let mut e = Errors(Vec::new());
    let list = match steps {
        Value::Array(l) if !l.is_empty() && l.len() <= MAX_STEPS => l,
        Value::Array(l) if l.is_empty() => {
            e.add("steps", "steps", "must hold at least one step");
            return Err(e.0);
        }
        Value::Array(l) => {
            e.add(
                "steps",
                "steps",
                format!("holds {} steps; at most {MAX_STEPS} are allowed", l.len()),
            );
            return Err(e.0);
        }
        _ => {
            e.add("steps", "steps", "must be a list of steps");
            return Err(e.0);
        }
    };
    // Keys first, so later checks can name steps and find jump targets.
    let mut names = Vec::with_capacity(list.len());
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, raw) in list.iter().enumerate() {
        let fallback = format!("steps[{i}]");
        let key = raw.get("key").and_then(Value::as_str);
        let name = match key {
            Some(k) if key_ok(k) && k != END => {
                if let Some(first) = index.get(k) {
                    e.add(k, "key", format!("repeats the key of steps[{first}]"));
                    fallback
                } else {
                    index.insert(k.to_owned(), i);
                    k.to_owned()
                }
            }
            Some(END) => {
                e.add(
                    &fallback,
                    "key",
                    "`end` is reserved: branches jump to it to end the run",
                );
                fallback
            }
            Some(_) | None => {
                e.add(
                    &fallback,
                    "key",
                    "is required: 1 to 100 lower-case letters, digits, `.`, `_` or `-`",
                );
                fallback
            }
        };
        names.push(name);
    }
    let mut parsed: Vec<Option<Step>> = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        let step = names[i].clone();
        let Value::Object(map) = raw else {
            e.add(&step, "steps", "must be an object");
            parsed.push(None);
            continue;
        };
        let mut f = Fields {
            step: step.clone(),
            map,
            used: vec!["key"],
        };
        let kind = match f.get("type").and_then(Value::as_str) {
            Some("send") => send(&mut f, &mut e),
            Some("delay") => delay(&mut f, &mut e),
            Some("wait_for") => wait_for(&mut f, &mut e, i, &index, &parsed),
            Some("branch") => branch(&mut f, &mut e, i, &index, &parsed),
            Some("digest") => digest(&mut f, &mut e),
            Some("throttle") => throttle(&mut f, &mut e),
            Some(other) => {
                e.add(
                    &step,
                    "type",
                    format!(
                        "`{}` is not a step type (send, delay, wait_for, branch, digest, throttle)",
                        other.chars().take(50).collect::<String>()
                    ),
                );
                None
            }
            None => {
                e.add(
                    &step,
                    "type",
                    "is required (send, delay, wait_for, branch, digest, throttle)",
                );
                None
            }
        };
        if kind.is_some() {
            f.unknown(&mut e);
        }
        parsed.push(kind.map(|kind| Step { key: step, kind }));
        if e.0.len() >= 100 {
            break;
        }
    }
    if e.0.is_empty() {
        Ok(parsed.into_iter().flatten().collect())
    } else {
        Err(e.0)
    }
}

fn send(f: &mut Fields<'_>, e: &mut Errors) -> Option<StepKind> {
    let template = f.required_string(e, "template", 100);
    let mut channels = Vec::new();
    match f.get("channels") {
        None => e.add(&f.step, "channels", "is required"),
        Some(Value::Array(l)) if l.is_empty() || l.len() > 5 => {
            e.add(&f.step, "channels", "must name 1 to 5 channels")
        }
        Some(Value::Array(l)) => {
            for (i, c) in l.iter().enumerate() {
                let name = format!("channels[{i}]");
                match c.as_str().map(Channel::parse) {
                    Some(Some(c)) if channels.contains(&c) => {
                        e.add(&f.step, &name, "is listed twice")
                    }
                    Some(Some(c)) => channels.push(c),
                    _ => e.add(
                        &f.step,
                        &name,
                        "must be a channel (email, sms, whatsapp, push, inapp)",
                    ),
                }
            }
        }
        Some(_) => e.add(&f.step, "channels", "must be a list of channels"),
    }
    let to = f.string(e, "to", 320);
    if let Some(to) = &to {
        match channels.as_slice() {
            [c] => {
                if let Err(why) = check_address(*c, to) {
                    e.add(&f.step, "to", why);
                }
            }
            _ => e.add(&f.step, "to", "a fixed address serves exactly one channel"),
        }
    }
    Some(StepKind::Send {
        template: template?,
        channels,
        to,
    })
}

fn delay(f: &mut Fields<'_>, e: &mut Errors) -> Option<StepKind> {
    let secs = f.seconds(e, "duration_secs", false);
    let field = f.string(e, "until_field", 300);
    let local = f.string(e, "until_local_time", 5);
    let given = [
        f.map.contains_key("duration_secs"),
        f.map.contains_key("until_field"),
        f.map.contains_key("until_local_time"),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        e.add(
            &f.step,
            "duration_secs",
            "name exactly one of `duration_secs`, `until_field`, `until_local_time`",
        );
        return None;
    }
    if let Some(p) = &field
        && !path_ok(p)
    {
        e.add(
            &f.step,
            "until_field",
            "must be a dotted payload path (`appointment.at`)",
        );
        return None;
    }
    if let Some(t) = &local
        && local_time(t).is_none()
    {
        e.add(
            &f.step,
            "until_local_time",
            "must be a time of day, `HH:MM`",
        );
        return None;
    }
    let d = match (secs, field, local) {
        (Some(s), _, _) => Delay::DurationSecs(s),
        (_, Some(p), _) => Delay::UntilField(p),
        (_, _, Some(t)) => Delay::UntilLocalTime(t),
        _ => return None,
    };
    Some(StepKind::Delay(d))
}

/// Checks that `target` names a step before `i`; returns its index.
fn earlier(
    f: &Fields<'_>,
    e: &mut Errors,
    field: &str,
    target: &str,
    i: usize,
    index: &HashMap<String, usize>,
) -> Option<usize> {
    match index.get(target) {
        None => {
            e.add(&f.step, field, format!("no step is named `{target}`"));
            None
        }
        Some(&j) if j >= i => {
            e.add(
                &f.step,
                field,
                format!("`{target}` is not an earlier step; only earlier steps have an outcome"),
            );
            None
        }
        Some(&j) => Some(j),
    }
}

fn wait_for(
    f: &mut Fields<'_>,
    e: &mut Errors,
    i: usize,
    index: &HashMap<String, usize>,
    parsed: &[Option<Step>],
) -> Option<StepKind> {
    let timeout = f.seconds(e, "timeout_secs", true);
    let step = f.string(e, "step", 100);
    let status = f.string(e, "status", 20);
    let event = f.string(e, "event", 100);
    let on = match (step, status, event) {
        (Some(step), Some(status), None) => {
            let status = match status.as_str() {
                "read" => Some(WaitStatus::Read),
                "delivered" => Some(WaitStatus::Delivered),
                "sent" => Some(WaitStatus::Sent),
                _ => {
                    e.add(&f.step, "status", "must be `read`, `delivered` or `sent`");
                    None
                }
            };
            if let Some(j) = earlier(f, e, "step", &step, i, index)
                && let Some(Some(s)) = parsed.get(j)
                && !matches!(s.kind, StepKind::Send { .. })
            {
                e.add(&f.step, "step", format!("`{step}` is not a send step"));
            }
            WaitOn::Status {
                step,
                status: status?,
            }
        }
        (None, None, Some(event)) if key_ok(&event) => WaitOn::Event { event },
        (None, None, Some(_)) => {
            e.add(
                &f.step,
                "event",
                "must be an event name: 1 to 100 lower-case letters, digits, `.`, `_` or `-`",
            );
            return None;
        }
        _ => {
            e.add(
                &f.step,
                "event",
                "name either `step` and `status`, or `event`",
            );
            return None;
        }
    };
    Some(StepKind::WaitFor {
        on,
        timeout_secs: timeout?,
    })
}

fn branch(
    f: &mut Fields<'_>,
    e: &mut Errors,
    i: usize,
    index: &HashMap<String, usize>,
    parsed: &[Option<Step>],
) -> Option<StepKind> {
    let then = f.required_string(e, "then", 100);
    if let Some(t) = &then
        && t != END
    {
        match index.get(t) {
            None => e.add(&f.step, "then", format!("no step is named `{t}`")),
            Some(&j) if j <= i => e.add(
                &f.step,
                "then",
                format!("jumps back to `{t}`: that would be a cycle; branches only jump forward"),
            ),
            Some(_) => {}
        }
    }
    let condition = match f.get("if") {
        Some(Value::Object(c)) => condition(f, e, c, i, index, parsed),
        _ => {
            e.add(
                &f.step,
                "if",
                "is required: an object with `step` and `outcome`, or `field`, `op` and `value`",
            );
            None
        }
    };
    Some(StepKind::Branch {
        condition: condition?,
        then: then?,
    })
}

fn condition(
    f: &Fields<'_>,
    e: &mut Errors,
    c: &Map<String, Value>,
    i: usize,
    index: &HashMap<String, usize>,
    parsed: &[Option<Step>],
) -> Option<Condition> {
    let text = |name: &str| c.get(name).and_then(Value::as_str);
    let allowed: &[&str] = if c.contains_key("step") {
        &["step", "outcome"]
    } else {
        &["field", "op", "value"]
    };
    for k in c.keys() {
        if !allowed.contains(&k.as_str()) {
            e.add(
                &f.step,
                &format!("if.{k}"),
                "is not a field of this condition",
            );
            return None;
        }
    }
    if let Some(step) = text("step") {
        let outcome = text("outcome");
        let j = earlier(f, e, "if.step", step, i, index)?;
        let Some(outcome) = outcome else {
            e.add(&f.step, "if.outcome", "is required");
            return None;
        };
        if let Some(Some(s)) = parsed.get(j) {
            let known = outcomes(&s.kind);
            if !known.contains(&outcome) {
                e.add(
                    &f.step,
                    "if.outcome",
                    format!("`{step}` ends with one of: {}", known.join(", ")),
                );
                return None;
            }
        }
        return Some(Condition::Outcome {
            step: step.to_owned(),
            outcome: outcome.to_owned(),
        });
    }
    let Some(field) = text("field").filter(|p| path_ok(p)) else {
        e.add(
            &f.step,
            "if.field",
            "must be a dotted payload path, or name `step`",
        );
        return None;
    };
    let op = match text("op") {
        Some("eq") => Op::Eq,
        Some("ne") => Op::Ne,
        Some("gt") => Op::Gt,
        Some("gte") => Op::Gte,
        Some("lt") => Op::Lt,
        Some("lte") => Op::Lte,
        Some("exists") => Op::Exists,
        Some("missing") => Op::Missing,
        _ => {
            e.add(
                &f.step,
                "if.op",
                "must be one of eq, ne, gt, gte, lt, lte, exists, missing",
            );
            return None;
        }
    };
    let value = c.get("value").cloned();
    let needs = !matches!(op, Op::Exists | Op::Missing);
    match &value {
        None | Some(Value::Null) if needs => {
            e.add(&f.step, "if.value", "is required for this comparison");
            return None;
        }
        Some(v) if !needs && !v.is_null() => {
            e.add(&f.step, "if.value", "is not used by `exists` or `missing`");
            return None;
        }
        Some(v) if v.to_string().len() > 1_000 => {
            e.add(&f.step, "if.value", "must be at most 1000 bytes as JSON");
            return None;
        }
        Some(Value::Array(_) | Value::Object(_))
            if matches!(op, Op::Gt | Op::Gte | Op::Lt | Op::Lte) =>
        {
            e.add(&f.step, "if.value", "orders compare numbers or strings");
            return None;
        }
        _ => {}
    }
    Some(Condition::Field {
        field: field.to_owned(),
        op,
        value: value.filter(|v| !v.is_null()),
    })
}

fn digest(f: &mut Fields<'_>, e: &mut Errors) -> Option<StepKind> {
    let window = f.seconds(e, "window_secs", true);
    let group_by = f.string(e, "group_by", 300);
    if let Some(k) = &group_by
        && !path_ok(k)
    {
        e.add(&f.step, "group_by", "must be a dotted payload path");
        return None;
    }
    Some(StepKind::Digest {
        window_secs: window?,
        group_by,
    })
}

fn throttle(f: &mut Fields<'_>, e: &mut Errors) -> Option<StepKind> {
    let window = f.seconds(e, "window_secs", true);
    let limit = match f.get("limit").map(Value::as_i64) {
        Some(Some(l @ 1..=10_000)) => Some(l),
        None => {
            e.add(&f.step, "limit", "is required");
            None
        }
        _ => {
            e.add(&f.step, "limit", "must be a whole number from 1 to 10000");
            None
        }
    };
    let on_limit = match f.get("on_limit").map(Value::as_str) {
        None | Some(Some("drop")) => Some(OnLimit::Drop),
        Some(Some("merge")) => Some(OnLimit::Merge),
        _ => {
            e.add(&f.step, "on_limit", "must be `drop` or `merge`");
            None
        }
    };
    Some(StepKind::Throttle {
        limit: limit?,
        window_secs: window?,
        on_limit: on_limit?,
    })
}
