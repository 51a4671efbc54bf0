//! `/api/v1/reports`: delivery reports of an organisation (of every
//! organisation for platform admins) computed from the hourly rollups
//! ([`shared::reports`]), as JSON, CSV or XLSX; a 7-day volume forecast;
//! and report schedules that email a report on a cron schedule
//! ([`schedules`]).
//!
//! Admins read their own organisation's reports; naming another
//! organisation answers 404. Platform admins read any organisation's, or
//! every organisation's together when they name none. Every export is
//! audited.

use chrono::{DateTime, NaiveDate, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::Query,
    payload::{Attachment, AttachmentType, Json, PlainText},
    validation::{MaxLength, Pattern},
};
use shared::{
    domain::TenantId,
    reports::{
        compute::{Comparison, Period, Report, Slice, Totals, Trend},
        export,
        forecast::ChannelForecast,
        own::Section,
    },
};

use crate::{
    error::ApiError,
    extract::AdminCtx,
    extract::Params,
    routes::ApiTags,
    services::reports::{self as service, Shape},
};

pub mod schedules;
pub mod templates;
mod xlsx;

/// The report and forecast endpoints.
#[derive(Debug)]
pub struct ReportsApi;

/// Counts and rates.
#[derive(Debug, Object)]
pub struct TotalsView {
    /// Notifications accepted.
    pub accepted: i64,
    /// Handed to a provider (or placed in the inbox).
    pub sent: i64,
    /// Reported delivered by the provider.
    pub delivered: i64,
    /// Failed for good.
    pub failed: i64,
    /// Bounced.
    pub bounced: i64,
    /// Read.
    pub read: i64,
    /// `delivered / sent` in percent; absent when nothing was sent.
    pub delivery_rate: Option<f64>,
    /// `failed / (sent + failed)` in percent.
    pub failure_rate: Option<f64>,
    /// `bounced / sent` in percent.
    pub bounce_rate: Option<f64>,
    /// `read / sent` in percent.
    pub read_rate: Option<f64>,
    /// Median accepted-to-sent latency (ms), from histogram buckets.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile accepted-to-sent latency (ms).
    pub latency_p99_ms: Option<f64>,
}

impl From<&Totals> for TotalsView {
    fn from(t: &Totals) -> Self {
        Self {
            accepted: t.accepted,
            sent: t.sent,
            delivered: t.delivered,
            failed: t.failed,
            bounced: t.bounced,
            read: t.read,
            delivery_rate: t.delivery_rate,
            failure_rate: t.failure_rate,
            bounce_rate: t.bounce_rate,
            read_rate: t.read_rate,
            latency_p50_ms: t.latency_p50_ms,
            latency_p99_ms: t.latency_p99_ms,
        }
    }
}

/// One slice of a breakdown.
#[derive(Debug, Object)]
pub struct SliceView {
    /// The channel, provider, template or category (`none`: without one;
    /// accepted notifications have no provider yet).
    pub key: String,
    /// Its counts.
    pub totals: TotalsView,
}

impl From<&Slice> for SliceView {
    fn from(s: &Slice) -> Self {
        Self {
            key: s.key.clone(),
            totals: (&s.totals).into(),
        }
    }
}

/// One hour or day.
#[derive(Debug, Object)]
pub struct PeriodView {
    /// Its start (UTC).
    pub start: DateTime<Utc>,
    /// Its counts.
    pub totals: TotalsView,
}

impl From<&Period> for PeriodView {
    fn from(p: &Period) -> Self {
        Self {
            start: p.start,
            totals: (&p.totals).into(),
        }
    }
}

/// The previous period of the same length, and the change from it.
#[derive(Debug, Object)]
pub struct ComparisonView {
    /// Its start.
    pub from: DateTime<Utc>,
    /// Its end (the report's start).
    pub to: DateTime<Utc>,
    /// Its counts.
    pub totals: TotalsView,
    /// Change of accepted notifications, in percent of the previous period.
    pub accepted_change: Option<f64>,
    /// Change of the delivery rate, in percentage points.
    pub delivery_rate_change: Option<f64>,
    /// Change of the failure rate, in percentage points.
    pub failure_rate_change: Option<f64>,
}

impl From<&Comparison> for ComparisonView {
    fn from(c: &Comparison) -> Self {
        Self {
            from: c.from,
            to: c.to,
            totals: (&c.totals).into(),
            accepted_change: c.accepted_change,
            delivery_rate_change: c.delivery_rate_change,
            failure_rate_change: c.failure_rate_change,
        }
    }
}

/// Where daily volume is heading.
#[derive(Debug, Object)]
pub struct TrendView {
    /// `rising`, `falling` or `flat`.
    pub direction: String,
    /// Least-squares slope of accepted notifications per day.
    pub slope_per_day: f64,
}

impl From<&Trend> for TrendView {
    fn from(t: &Trend) -> Self {
        Self {
            direction: t.direction.to_owned(),
            slope_per_day: t.slope_per_day,
        }
    }
}

/// A report. A report template of the organisation's own keeps only the
/// sections it names; the others are absent.
#[derive(Debug, Object)]
pub struct ReportView {
    /// `daily_summary`, `weekly_performance`, `monthly_comprehensive`,
    /// `custom`, or the key of the organisation's own template.
    pub template: String,
    /// The organisation; absent for a platform-wide report.
    pub organization_id: Option<String>,
    /// Start (inclusive, whole hour, UTC).
    pub from: DateTime<Utc>,
    /// End (exclusive, whole hour, UTC).
    pub to: DateTime<Utc>,
    /// The whole range.
    pub totals: TotalsView,
    /// The channel an own template narrows the report to.
    #[oai(skip_serializing_if_is_none)]
    pub channel: Option<String>,
    /// Per channel, busiest first (section `channels`).
    #[oai(skip_serializing_if_is_none)]
    pub by_channel: Option<Vec<SliceView>>,
    /// Per provider, busiest first (section `providers`).
    #[oai(skip_serializing_if_is_none)]
    pub by_provider: Option<Vec<SliceView>>,
    /// Per template, busiest first (section `templates`).
    #[oai(skip_serializing_if_is_none)]
    pub by_template: Option<Vec<SliceView>>,
    /// Per category, busiest first (section `categories`).
    #[oai(skip_serializing_if_is_none)]
    pub by_category: Option<Vec<SliceView>>,
    /// The busiest hours by accepted notifications (at most 5; section
    /// `busiest_hours`).
    #[oai(skip_serializing_if_is_none)]
    pub busiest_hours: Option<Vec<PeriodView>>,
    /// Each UTC day with activity, oldest first (section `days`).
    #[oai(skip_serializing_if_is_none)]
    pub days: Option<Vec<PeriodView>>,
    /// The previous period of the same length (section `comparison`).
    #[oai(skip_serializing_if_is_none)]
    pub previous: Option<ComparisonView>,
    /// Daily volume's direction (section `trend`).
    #[oai(skip_serializing_if_is_none)]
    pub trend: Option<TrendView>,
}

impl ReportView {
    /// The view of `r` with the sections `shape` keeps.
    pub fn of(r: &Report, shape: &Shape) -> Self {
        let has = |s: Section| shape.sections.contains(&s);
        let slices = |s: Section, v: &[Slice]| has(s).then(|| v.iter().map(Into::into).collect());
        let periods = |s: Section, v: &[Period]| has(s).then(|| v.iter().map(Into::into).collect());
        Self {
            template: shape.label.clone(),
            organization_id: r.organization_id.map(|t| t.to_string()),
            from: r.from,
            to: r.to,
            totals: (&r.totals).into(),
            channel: shape.channel.clone(),
            by_channel: slices(Section::Channels, &r.by_channel),
            by_provider: slices(Section::Providers, &r.by_provider),
            by_template: slices(Section::Templates, &r.by_template),
            by_category: slices(Section::Categories, &r.by_category),
            busiest_hours: periods(Section::BusiestHours, &r.busiest_hours),
            days: periods(Section::Days, &r.days),
            previous: has(Section::Comparison).then(|| (&r.previous).into()),
            trend: has(Section::Trend).then(|| (&r.trend).into()),
        }
    }
}

/// Answers with a report.
#[derive(Debug, ApiResponse)]
pub enum ReportResponse {
    /// The report (`format=json`).
    #[oai(status = 200)]
    Ok(Json<Box<ReportView>>),
    /// The report as CSV (`format=csv`): a header row, then one row per
    /// section and key (`total`, `previous`, `channel`, `provider`,
    /// `template`, `category`, `busiest_hour`, `day`, `trend`).
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Csv(
        PlainText<String>,
        #[oai(header = "Content-Disposition")] String,
    ),
    /// The report as an Excel workbook (`format=xlsx`), the CSV's rows on
    /// one sheet.
    #[oai(
        status = 200,
        content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )]
    Xlsx(Attachment<Vec<u8>>),
}

/// [`ReportResponse`] with its three 200 answers documented as one
/// response with three content types (poem-openapi keeps only the last
/// variant of a status otherwise).
#[derive(Debug)]
pub struct ReportAnswer(ReportResponse);

impl poem_openapi::ApiResponse for ReportAnswer {
    fn meta() -> poem_openapi::registry::MetaResponses {
        let mut merged: Vec<poem_openapi::registry::MetaResponse> = Vec::new();
        for r in ReportResponse::meta().responses {
            match merged.iter_mut().find(|m| m.status == r.status) {
                Some(m) => {
                    m.content.extend(r.content);
                    for h in r.headers {
                        if !m.headers.iter().any(|x| x.name == h.name) {
                            m.headers.push(h);
                        }
                    }
                }
                None => merged.push(r),
            }
        }
        for m in &mut merged {
            m.description = "The report: JSON (`format=json`), CSV (`format=csv`: a header \
                row, then one row per section and key: `total`, `previous`, `channel`, \
                `provider`, `template`, `category`, `busiest_hour`, `day`, `trend`) or an \
                Excel workbook (`format=xlsx`: the CSV's rows on one sheet).";
            for h in &mut m.headers {
                h.required = false;
            }
        }
        poem_openapi::registry::MetaResponses { responses: merged }
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        ReportResponse::register(registry);
    }
}

impl poem::IntoResponse for ReportAnswer {
    fn into_response(self) -> poem::Response {
        self.0.into_response()
    }
}

/// One day's forecast.
#[derive(Debug, Object)]
pub struct ForecastDay {
    /// The UTC day.
    pub date: NaiveDate,
    /// Notifications expected to be accepted.
    pub accepted: f64,
}

/// One channel's forecast.
#[derive(Debug, Object)]
pub struct ChannelForecastView {
    /// The channel.
    pub channel: String,
    /// The next 7 days from today (UTC).
    pub days: Vec<ForecastDay>,
    /// Days of history used (up to 56, from the channel's first active
    /// day).
    pub history_days: i64,
    /// Mean absolute error of the model on the last 7 days of history,
    /// fitted on the days before them; absent with under 14 days.
    pub holdout_mae: Option<f64>,
    /// Mean absolute percentage error on the same held-out days.
    pub holdout_mape: Option<f64>,
}

/// A forecast.
#[derive(Debug, Object)]
pub struct ForecastView {
    /// `seasonal_mean_4w`: each day is the mean of the same weekday over
    /// the last 4 weeks.
    pub method: String,
    /// The organisation; absent for a platform-wide forecast.
    pub organization_id: Option<String>,
    /// One entry per channel with history (or the one asked for).
    pub channels: Vec<ChannelForecastView>,
}

/// Answers with a forecast.
#[derive(Debug, ApiResponse)]
pub enum ForecastResponse {
    /// The forecast.
    #[oai(status = 200)]
    Ok(Json<ForecastView>),
}

crate::query_params! {
    /// What a report covers and how it is written.
    pub struct ReportQuery {
        template: String where [Pattern::new("^([a-z][a-z0-9_]{0,63}|[0-9a-fA-F-]{36})$")],
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        format: Option<String> where [Pattern::new("^(json|csv|xlsx)$")],
        organization_id: Option<String> where [MaxLength::new(36)],
    }
}

#[OpenApi(prefix_path = "/api/v1/reports", tag = "ApiTags::Reports")]
impl ReportsApi {
    /// A delivery report (admins). `template` picks the period:
    /// `daily_summary` (24 hours), `weekly_performance` (7 days) and
    /// `monthly_comprehensive` (one calendar month) end at `to` (default
    /// now) and take no `from`; `custom` needs `from` and `to`, at most 366
    /// days apart. The id or key of one of the caller's organisation's own
    /// report templates (`/api/v1/reports/templates`) ends at `to` as well
    /// and keeps its sections and channel only (an id of no template of
    /// the organisation answers 404). The range is widened to whole hours. `format` is `json`
    /// (default), `csv` or `xlsx`. Platform admins may name one
    /// `organization_id` or none (every organisation); others their own or
    /// none. Counts come from the hourly rollups, which trail the
    /// notifications by about a second.
    #[oai(path = "/", method = "get", operation_id = "reports.get")]
    async fn report(
        &self,
        cx: AdminCtx<'_>,
        query: Params<ReportQuery>,
    ) -> Result<ReportAnswer, ApiError> {
        let ReportQuery {
            template,
            from,
            to,
            format,
            organization_id,
        } = query.0;
        let p = cx.principal().await?;
        let ask = service::ReportAsk {
            template,
            from,
            to,
            format,
            organization_id,
        };
        let exported = service::export(cx.state, &p, cx.request_id, ask).await?;
        written(exported).map(ReportAnswer)
    }

    /// The next 7 days' accepted notifications per channel (admins), from
    /// the last 56 days of daily history: each day is the mean of the same
    /// weekday over the last 4 weeks. Each channel carries the model's
    /// error on its own held-out last 7 days. `channel` narrows to one;
    /// `organization_id` as for reports.
    #[oai(path = "/forecast", method = "get", operation_id = "reports.forecast")]
    async fn forecast(
        &self,
        cx: AdminCtx<'_>,
        #[oai(validator(pattern = "^(email|sms|push|whatsapp|inapp)$"))] channel: Query<
            Option<String>,
        >,
        #[oai(validator(max_length = 36))] organization_id: Query<Option<String>>,
    ) -> Result<ForecastResponse, ApiError> {
        let p = cx.principal().await?;
        let (reach, channels) = service::forecast(
            cx.state,
            &p,
            cx.request_id,
            channel.0.as_deref(),
            organization_id.0.as_deref(),
        )
        .await?;
        Ok(ForecastResponse::Ok(Json(forecast_view(
            reach.tenant(),
            channels,
        ))))
    }
}

/// A report written in its format: JSON, CSV or XLSX (those two as
/// attachments named after the template and the range's start).
fn written(e: service::Exported) -> Result<ReportResponse, ApiError> {
    let service::Exported {
        report,
        shape,
        range,
        format,
    } = e;
    let name = format!("report-{}-{}", shape.label, range.from.format("%Y%m%dT%H"));
    Ok(match format.as_str() {
        "csv" => ReportResponse::Csv(
            PlainText(
                String::from_utf8(
                    export::csv_of(&report, &shape.sections).map_err(anyhow::Error::from)?,
                )
                .map_err(anyhow::Error::from)?,
            ),
            format!("attachment; filename=\"{name}.csv\""),
        ),
        "xlsx" => ReportResponse::Xlsx(
            Attachment::new(xlsx::workbook(&report, &shape.sections)?)
                .attachment_type(AttachmentType::Attachment)
                .filename(format!("{name}.xlsx")),
        ),
        _ => ReportResponse::Ok(Json(Box::new(ReportView::of(&report, &shape)))),
    })
}

/// The forecast of `tenant` (platform-wide when none) as shown.
fn forecast_view(tenant: Option<TenantId>, channels: Vec<ChannelForecast>) -> ForecastView {
    ForecastView {
        method: "seasonal_mean_4w".into(),
        organization_id: tenant.map(|t| t.to_string()),
        channels: channels
            .into_iter()
            .map(|c| ChannelForecastView {
                channel: c.channel,
                days: c
                    .days
                    .into_iter()
                    .map(|(date, accepted)| ForecastDay { date, accepted })
                    .collect(),
                history_days: c.history_days as i64,
                holdout_mae: c.holdout_mae,
                holdout_mape: c.holdout_mape,
            })
            .collect(),
    }
}
