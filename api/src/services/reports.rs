//! Report schedules: the rules a schedule follows before it is stored. The
//! routes in [`crate::routes::reports`] parse requests and shape answers.
//!
//! Malformed fields are 400, every one named at once; a schedule firing
//! more than hourly, a template that is neither built in nor the
//! organisation's, and recipients who are not active users of the
//! organisation are 422.

use chrono::{DateTime, Utc};
use shared::{
    db::{
        report_schedules::{self as store, ScheduleSpec},
        report_templates::{self as templates_store, ReportTemplate},
    },
    domain::TenantId,
    reports::{Template, schedule::ReportCron},
};
use uuid::Uuid;

use crate::{
    AppState,
    error::{ApiError, InvalidParam},
};

/// A schedule as sent: a new one, or a schedule's replacement.
#[derive(Debug)]
pub struct ScheduleInput {
    /// A name for people.
    pub name: String,
    /// A built-in template's name, or the id or key of one of the
    /// organisation's own.
    pub template: String,
    /// `csv` (default) or `json`.
    pub format: Option<String>,
    /// Five cron fields.
    pub cron: String,
    /// The time zone the cron expression is read in (default `UTC`).
    pub timezone: Option<String>,
    /// Users of the organisation who receive it.
    pub recipients: Vec<Uuid>,
    /// Whether it fires (default true).
    pub enabled: Option<bool>,
}

/// Malformed fields found so far: `(field, reason)`.
type Malformed = Vec<(&'static str, String)>;

/// `input` checked for `tenant` at `now`: the schedule to store, its next
/// firing computed from `now`.
pub async fn check_schedule(
    state: &AppState,
    tenant: TenantId,
    input: ScheduleInput,
    now: DateTime<Utc>,
) -> Result<ScheduleSpec, ApiError> {
    let mut bad = Malformed::new();
    let name = check_name(&input.name, &mut bad);
    let own = own_template(state, tenant, &input.template, &mut bad).await?;
    let format = check_format(input.format, &mut bad);
    check_recipient_count(&input.recipients, &mut bad);
    let cron = check_cron(&input.cron, input.timezone, &mut bad)?;
    refuse_malformed(bad)?;
    let cron = cron.ok_or_else(|| ApiError::invalid("cron", "does not parse"))?;
    if own.is_none() && Template::parse(&input.template).is_none() {
        return Err(ApiError::Unprocessable(vec![InvalidParam {
            name: "template".into(),
            reason: "is neither a built-in template nor one of the organisation's report \
                     templates"
                .into(),
        }]));
    }
    let recipients = active_recipients(state, tenant, input.recipients).await?;
    let enabled = input.enabled.unwrap_or(true);
    Ok(ScheduleSpec {
        name,
        report_template_id: own.as_ref().map(|t| t.id),
        template: if own.is_some() {
            "own".to_owned()
        } else {
            input.template
        },
        format,
        next_run_at: if enabled { cron.next_after(now) } else { None },
        cron: cron.expression().to_owned(),
        timezone: cron.zone().to_owned(),
        recipients,
        enabled,
    })
}

/// The trimmed name: 1 to 200 characters.
fn check_name(raw: &str, bad: &mut Malformed) -> String {
    let name = raw.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        bad.push(("name", "must be 1 to 200 characters".to_owned()));
    }
    name
}

/// The organisation's own template `raw` names, when it is a reference to
/// one (not a built-in name); a custom range or a malformed reference is
/// malformed.
async fn own_template(
    state: &AppState,
    tenant: TenantId,
    raw: &str,
    bad: &mut Malformed,
) -> Result<Option<ReportTemplate>, ApiError> {
    match Template::parse(raw) {
        Some(Template::Custom) => bad.push((
            "template",
            "must be daily_summary, weekly_performance, monthly_comprehensive or the id or key \
             of one of the organisation's report templates (custom ranges cannot repeat)"
                .to_owned(),
        )),
        Some(_) => {}
        None if !shared::reports::own::is_reference(raw) => bad.push((
            "template",
            "must be a built-in template's name, or the id or key of one of the organisation's \
             report templates"
                .to_owned(),
        )),
        None => return Ok(templates_store::find(&state.pool, tenant, raw).await?),
    }
    Ok(None)
}

/// The format, `csv` by default; emails carry no attachments.
fn check_format(raw: Option<String>, bad: &mut Malformed) -> String {
    let format = raw.unwrap_or_else(|| "csv".into());
    if !matches!(format.as_str(), "csv" | "json") {
        bad.push((
            "format",
            "must be csv or json (emails carry no attachments)".to_owned(),
        ));
    }
    format
}

/// 1 to 50 recipients.
fn check_recipient_count(recipients: &[Uuid], bad: &mut Malformed) {
    if recipients.is_empty() || recipients.len() > 50 {
        bad.push(("recipients", "must name 1 to 50 users".to_owned()));
    }
}

/// The cron expression read in `timezone` (`UTC` by default). Firing more
/// than hourly is 422 when nothing else is malformed, else left to the
/// malformed fields' 400.
fn check_cron(
    expression: &str,
    timezone: Option<String>,
    bad: &mut Malformed,
) -> Result<Option<ReportCron>, ApiError> {
    let timezone = timezone.unwrap_or_else(|| "UTC".into());
    match ReportCron::parse(expression, &timezone) {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.too_often => {
            if bad.is_empty() {
                return Err(ApiError::Unprocessable(vec![InvalidParam {
                    name: e.field.into(),
                    reason: e.reason,
                }]));
            }
            Ok(None)
        }
        Err(e) => {
            bad.push((e.field, e.reason));
            Ok(None)
        }
    }
}

/// 400 naming every malformed field, if any.
fn refuse_malformed(bad: Malformed) -> Result<(), ApiError> {
    if bad.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid(
        bad.into_iter()
            .map(|(name, reason)| InvalidParam {
                name: name.into(),
                reason,
            })
            .collect(),
    ))
}

/// The recipients, sorted and without repeats, when each is an active user
/// of `tenant`; else 422 naming each that is not.
async fn active_recipients(
    state: &AppState,
    tenant: TenantId,
    mut recipients: Vec<Uuid>,
) -> Result<Vec<Uuid>, ApiError> {
    recipients.sort();
    recipients.dedup();
    let known = store::active_users(&state.pool, tenant, &recipients).await?;
    let unknown: Vec<InvalidParam> = recipients
        .iter()
        .filter(|r| !known.contains(r))
        .map(|r| InvalidParam {
            name: "recipients".into(),
            reason: format!("{r} is not an active user of the organisation"),
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::Unprocessable(unknown));
    }
    Ok(recipients)
}
