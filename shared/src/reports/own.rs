//! Report templates of an organisation's own: a period (a day, a week, a
//! calendar month or a number of days up to 366), the sections a report
//! keeps and an optional channel it is narrowed to. They are used by
//! `GET /api/v1/reports?template=` (by id or key) and by report schedules
//! ([`crate::db::report_templates`] stores them).

use chrono::{DateTime, Months, TimeDelta, Utc};
use serde::Serialize;

use super::Template;

/// A section of a report beside its totals, which every report has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// Per channel.
    Channels,
    /// Per provider.
    Providers,
    /// Per message template.
    Templates,
    /// Per category.
    Categories,
    /// The five busiest hours.
    BusiestHours,
    /// Every UTC day with activity.
    Days,
    /// The previous period and the change from it.
    Comparison,
    /// Daily volume's direction.
    Trend,
}

impl Section {
    /// Every section, in a report's order.
    pub const ALL: [Section; 8] = [
        Section::Channels,
        Section::Providers,
        Section::Templates,
        Section::Categories,
        Section::BusiestHours,
        Section::Days,
        Section::Comparison,
        Section::Trend,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Channels => "channels",
            Section::Providers => "providers",
            Section::Templates => "templates",
            Section::Categories => "categories",
            Section::BusiestHours => "busiest_hours",
            Section::Days => "days",
            Section::Comparison => "comparison",
            Section::Trend => "trend",
        }
    }

    /// Parses a name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// The `section` column of the report's CSV rows it covers.
    pub fn csv_section(self) -> &'static str {
        match self {
            Section::Channels => "channel",
            Section::Providers => "provider",
            Section::Templates => "template",
            Section::Categories => "category",
            Section::BusiestHours => "busiest_hour",
            Section::Days => "day",
            Section::Comparison => "previous",
            Section::Trend => "trend",
        }
    }

    /// The key of the report's JSON it covers.
    pub fn json_key(self) -> &'static str {
        match self {
            Section::Channels => "by_channel",
            Section::Providers => "by_provider",
            Section::Templates => "by_template",
            Section::Categories => "by_category",
            Section::BusiestHours => "busiest_hours",
            Section::Days => "days",
            Section::Comparison => "previous",
            Section::Trend => "trend",
        }
    }
}

/// How long an own template's report looks back from its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnPeriod {
    /// 24 hours.
    Day,
    /// 7 days.
    Week,
    /// One calendar month.
    Month,
    /// This many days (1 to 366).
    Days(i32),
}

impl OwnPeriod {
    /// The start of the period ending at `to`.
    pub fn start(self, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            OwnPeriod::Day => Some(to - TimeDelta::days(1)),
            OwnPeriod::Week => Some(to - TimeDelta::days(7)),
            OwnPeriod::Month => to.checked_sub_months(Months::new(1)),
            OwnPeriod::Days(n) => Some(to - TimeDelta::days(i64::from(n))),
        }
    }

    /// `day`, `week`, `month` or `days`, and the days of `days`.
    pub fn columns(self) -> (&'static str, Option<i32>) {
        match self {
            OwnPeriod::Day => ("day", None),
            OwnPeriod::Week => ("week", None),
            OwnPeriod::Month => ("month", None),
            OwnPeriod::Days(n) => ("days", Some(n)),
        }
    }

    /// From the stored columns.
    pub fn from_columns(period: &str, days: Option<i32>) -> Self {
        match (period, days) {
            ("week", _) => OwnPeriod::Week,
            ("month", _) => OwnPeriod::Month,
            ("days", Some(n)) => OwnPeriod::Days(n),
            _ => OwnPeriod::Day,
        }
    }
}

/// A template as the caller sent it, checked by [`TemplateInput::check`].
#[derive(Debug, Clone, Default)]
pub struct TemplateInput {
    /// Its key (`^[a-z][a-z0-9_]{0,63}$`, not a built-in template's name).
    pub key: Option<String>,
    /// A name for people.
    pub name: Option<String>,
    /// `day`, `week` or `month`.
    pub period: Option<String>,
    /// Instead of `period`: this many days (1 to 366).
    pub period_days: Option<i64>,
    /// The sections to keep (default: every one).
    pub sections: Option<Vec<String>>,
    /// Narrows the report to one channel.
    pub channel: Option<String>,
}

/// A checked template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSpec {
    /// Its key.
    pub key: String,
    /// A name for people.
    pub name: String,
    /// Its period.
    pub period: OwnPeriod,
    /// The sections it keeps, in a report's order.
    pub sections: Vec<Section>,
    /// The channel it is narrowed to.
    pub channel: Option<String>,
}

/// The channels a report may be narrowed to.
pub const CHANNELS: &[&str] = &["email", "sms", "push", "whatsapp", "inapp"];

fn key_ok(k: &str) -> bool {
    let mut chars = k.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && k.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Whether `raw` could name an own template: a key's form, or an id.
pub fn is_reference(raw: &str) -> bool {
    key_ok(raw) || uuid::Uuid::parse_str(raw).is_ok()
}

impl TemplateInput {
    /// Checks every field; one problem per bad field.
    pub fn check(self) -> Result<TemplateSpec, Vec<(&'static str, String)>> {
        let mut bad: Vec<(&'static str, String)> = Vec::new();
        let key = self.key.unwrap_or_default();
        if !key_ok(&key) {
            bad.push((
                "key",
                "must be 1 to 64 lower-case letters, digits and underscores, starting with a letter"
                    .into(),
            ));
        } else if Template::parse(&key).is_some() {
            bad.push(("key", format!("{key} is a built-in template's name")));
        }
        let name = self.name.unwrap_or_default().trim().to_owned();
        if !(1..=200).contains(&name.chars().count()) {
            bad.push(("name", "must be 1 to 200 characters".into()));
        }
        let period = match (self.period.as_deref(), self.period_days) {
            (Some(_), Some(_)) => {
                bad.push(("period_days", "give either period or period_days".into()));
                None
            }
            (None, None) => {
                bad.push((
                    "period",
                    "is required: day, week, month, or period_days".into(),
                ));
                None
            }
            (Some("day"), None) => Some(OwnPeriod::Day),
            (Some("week"), None) => Some(OwnPeriod::Week),
            (Some("month"), None) => Some(OwnPeriod::Month),
            (Some(_), None) => {
                bad.push(("period", "must be day, week or month".into()));
                None
            }
            (None, Some(n)) if (1..=366).contains(&n) => Some(OwnPeriod::Days(n as i32)),
            (None, Some(_)) => {
                bad.push(("period_days", "must be 1 to 366".into()));
                None
            }
        };
        let sections = match self.sections {
            None => Section::ALL.to_vec(),
            Some(raw) if raw.is_empty() || raw.len() > Section::ALL.len() => {
                bad.push(("sections", "must name 1 to 8 sections".into()));
                Vec::new()
            }
            Some(raw) => {
                let mut out = Vec::new();
                for s in &raw {
                    match Section::parse(s) {
                        Some(s) if !out.contains(&s) => out.push(s),
                        Some(_) => bad.push(("sections", format!("names {s} twice"))),
                        None => {
                            let known: Vec<&str> =
                                Section::ALL.iter().map(|s| s.as_str()).collect();
                            bad.push((
                                "sections",
                                format!("{s} is not a section; one of {}", known.join(", ")),
                            ));
                        }
                    }
                }
                out.sort_by_key(|s| Section::ALL.iter().position(|a| a == s));
                out
            }
        };
        if let Some(c) = &self.channel
            && !CHANNELS.contains(&c.as_str())
        {
            bad.push(("channel", format!("must be one of {}", CHANNELS.join(", "))));
        }
        match period {
            Some(period) if bad.is_empty() => Ok(TemplateSpec {
                key,
                name,
                period,
                sections,
                channel: self.channel,
            }),
            _ => Err(bad),
        }
    }
}

/// Drops the sections a template does not keep from a report's JSON.
pub fn keep_json(report: &mut serde_json::Value, sections: &[Section]) {
    if let Some(o) = report.as_object_mut() {
        for s in Section::ALL {
            if !sections.contains(&s) {
                o.remove(s.json_key());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> TemplateInput {
        TemplateInput {
            key: Some("sms_fortnight".into()),
            name: Some("SMS fortnight".into()),
            period_days: Some(14),
            sections: Some(vec!["trend".into(), "channels".into()]),
            channel: Some("sms".into()),
            ..TemplateInput::default()
        }
    }

    #[test]
    fn a_template_is_checked_and_its_sections_ordered() {
        let t = input().check().unwrap();
        assert_eq!(t.period, OwnPeriod::Days(14));
        assert_eq!(t.sections, [Section::Channels, Section::Trend]);
        let named = |i: TemplateInput| -> Vec<&'static str> {
            i.check().unwrap_err().into_iter().map(|(f, _)| f).collect()
        };
        assert_eq!(
            named(TemplateInput {
                key: Some("daily_summary".into()),
                ..input()
            }),
            ["key"]
        );
        assert_eq!(
            named(TemplateInput {
                period: Some("week".into()),
                ..input()
            }),
            ["period_days"]
        );
        assert_eq!(
            named(TemplateInput {
                period_days: Some(367),
                ..input()
            }),
            ["period_days"]
        );
        assert_eq!(
            named(TemplateInput {
                sections: Some(vec!["pie_chart".into()]),
                channel: Some("fax".into()),
                ..input()
            }),
            ["sections", "channel"]
        );
    }
}
