//! Reports: which template a report names, computing and auditing a
//! report, the 7-day forecast, and the rules a report schedule follows
//! before it is stored. The routes in [`crate::routes::reports`] parse
//! requests and shape answers.
//!
//! Malformed fields are 400, every one named at once; a schedule firing
//! more than hourly, a template that is neither built in nor the
//! organisation's, and recipients who are not active users of the
//! organisation are 422.

use chrono::{DateTime, Utc};
use serde_json::json;
use shared::{
    db::{
        report_schedules::{self as store, ScheduleSpec},
        report_templates::{self as templates_store, ReportTemplate},
        scope::Reach,
    },
    domain::TenantId,
    reports::{
        ReportRange, Template,
        compute::{self, Report},
        forecast::{self, ChannelForecast},
        own::Section,
        schedule::ReportCron,
    },
};
use uuid::Uuid;

use crate::{
    AppState,
    access::Principal,
    error::{ApiError, InvalidParam},
    middleware::RequestId,
};

/// What a report keeps: its label, sections and channel.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The template's name or own key.
    pub label: String,
    /// The sections kept.
    pub sections: Vec<Section>,
    /// The channel it is narrowed to.
    pub channel: Option<String>,
}

/// A report as asked for.
#[derive(Debug)]
pub struct ReportAsk {
    /// A built-in template's name, or the id or key of one of the
    /// organisation's own.
    pub template: String,
    /// Start (`custom` only).
    pub from: Option<DateTime<Utc>>,
    /// End (default now).
    pub to: Option<DateTime<Utc>>,
    /// `json` (default), `csv` or `xlsx`.
    pub format: Option<String>,
    /// The organisation (platform admins: one or none).
    pub organization_id: Option<String>,
}

/// A report computed and audited, to be written in its format.
#[derive(Debug)]
pub struct Exported {
    /// The report.
    pub report: Report,
    /// What of it is kept.
    pub shape: Shape,
    /// The range it covers.
    pub range: ReportRange,
    /// `json`, `csv` or `xlsx`.
    pub format: String,
}

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

/// Whose rows a report reads (every organisation's for a platform admin
/// naming none).
fn subject(p: &Principal, requested: Option<&str>) -> Result<Reach, ApiError> {
    p.reach_of(requested)
}

/// The template `raw` names for a report of the caller: a built-in one, or
/// one of the caller's organisation's own by id or key. An id of none of
/// its templates answers 404; any other unknown name 400.
pub async fn resolve(
    state: &AppState,
    p: &Principal,
    raw: &str,
) -> Result<(Template, Shape), ApiError> {
    if let Some(t) = Template::parse(raw) {
        return Ok((
            t,
            Shape {
                label: t.as_str().to_owned(),
                sections: Section::ALL.to_vec(),
                channel: None,
            },
        ));
    }
    match templates_store::find(&state.pool, p.caller.tenant_id, raw).await? {
        Some(own) => Ok((
            Template::Own(own.spec.period),
            Shape {
                label: own.spec.key,
                sections: own.spec.sections,
                channel: own.spec.channel,
            },
        )),
        None if Uuid::parse_str(raw).is_ok() => Err(ApiError::NotFound("report template")),
        None => Err(ApiError::invalid(
            "template",
            "must be daily_summary, weekly_performance, monthly_comprehensive, custom, or the \
             id or key of one of the organisation's report templates",
        )),
    }
}

/// The report `ask` names, computed from the hourly rollups and audited as
/// `report.export`: whose rows first (refusal audited), then the template,
/// then the range.
pub async fn export(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    ask: ReportAsk,
) -> Result<Exported, ApiError> {
    let act = p.at(state, request_id).acting("report.export", "report");
    let requested = ask.organization_id.as_deref();
    let reach = act.refused(requested, subject(p, requested)).await?;
    let (template, shape) = resolve(state, p, &ask.template).await?;
    let range = ReportRange::new(template, ask.from, ask.to, Utc::now())
        .map_err(|e| ApiError::invalid(e.field, e.reason))?;
    let format = ask.format.unwrap_or_else(|| "json".into());
    let report = compute::report_of(&state.pool, reach, &range, shape.channel.as_deref()).await?;
    act.audit(&state.pool, reach.tenant(), shape.label.as_str(), json!({"from": range.from, "to": range.to, "format": format, "platform_wide": reach.tenant().is_none()}))
        .await?;
    Ok(Exported {
        report,
        shape,
        range,
        format,
    })
}

/// The next 7 days' accepted notifications per channel (or `channel`
/// alone) of the organisations `organization_id` names for `p` (refusal
/// audited as `report.forecast`), and whose they are.
pub async fn forecast(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    channel: Option<&str>,
    organization_id: Option<&str>,
) -> Result<(Reach, Vec<ChannelForecast>), ApiError> {
    let act = p.at(state, request_id).acting("report.forecast", "report");
    let reach = act
        .refused(organization_id, subject(p, organization_id))
        .await?;
    if let Some(c) = channel
        && shared::domain::Channel::parse(c).is_none()
    {
        return Err(ApiError::invalid(
            "channel",
            "must be email, sms, push, whatsapp or inapp",
        ));
    }
    let today = Utc::now().date_naive();
    let channels = forecast::forecast(&state.pool, reach, channel, today).await?;
    Ok((reach, channels))
}
