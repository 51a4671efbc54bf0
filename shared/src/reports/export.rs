//! A report as one table: a row per section and key with every count and
//! rate, the shape of both the CSV and the XLSX exports.

use super::compute::{Report, Totals};

/// The table's header.
pub const HEADER: [&str; 15] = [
    "section",
    "key",
    "accepted",
    "sent",
    "delivered",
    "failed",
    "bounced",
    "read",
    "delivery_rate",
    "failure_rate",
    "bounce_rate",
    "read_rate",
    "latency_p50_ms",
    "latency_p99_ms",
    "note",
];

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text.
    Text(String),
    /// A count.
    Int(i64),
    /// A rate or latency.
    Num(f64),
    /// No value (a rate over nothing).
    Empty,
}

impl Cell {
    /// As CSV text.
    pub fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Int(i) => i.to_string(),
            Self::Num(n) => n.to_string(),
            Self::Empty => String::new(),
        }
    }
}

fn row(section: &str, key: &str, t: &Totals, note: String) -> Vec<Cell> {
    let opt = |v: Option<f64>| v.map(Cell::Num).unwrap_or(Cell::Empty);
    vec![
        Cell::Text(section.into()),
        Cell::Text(key.into()),
        Cell::Int(t.accepted),
        Cell::Int(t.sent),
        Cell::Int(t.delivered),
        Cell::Int(t.failed),
        Cell::Int(t.bounced),
        Cell::Int(t.read),
        opt(t.delivery_rate),
        opt(t.failure_rate),
        opt(t.bounce_rate),
        opt(t.read_rate),
        opt(t.latency_p50_ms),
        opt(t.latency_p99_ms),
        Cell::Text(note),
    ]
}

/// The report's rows, header excluded: `total` (its note: the range),
/// `previous` (the previous period, its note the change), then `channel`,
/// `provider`, `template`, `category`, `busiest_hour` and `day` rows, and a
/// `trend` row whose note is the direction and slope.
pub fn rows(r: &Report) -> Vec<Vec<Cell>> {
    rows_of(r, &super::own::Section::ALL)
}

/// [`rows`] of the `total` row and the `sections` only.
pub fn rows_of(r: &Report, sections: &[super::own::Section]) -> Vec<Vec<Cell>> {
    let mut out = all_rows(r);
    out.retain(|cells| match cells.first() {
        Some(Cell::Text(section)) => {
            section == "total" || sections.iter().any(|s| s.csv_section() == section)
        }
        _ => true,
    });
    out
}

fn all_rows(r: &Report) -> Vec<Vec<Cell>> {
    let mut out = vec![row(
        "total",
        "all",
        &r.totals,
        format!("{} to {}", r.from.to_rfc3339(), r.to.to_rfc3339()),
    )];
    let change = |v: Option<f64>| v.map(|v| format!("{v:+}")).unwrap_or_else(|| "n/a".into());
    out.push(row(
        "previous",
        "all",
        &r.previous.totals,
        format!(
            "{} to {}; accepted {}%, delivery rate {} pts, failure rate {} pts",
            r.previous.from.to_rfc3339(),
            r.previous.to.to_rfc3339(),
            change(r.previous.accepted_change),
            change(r.previous.delivery_rate_change),
            change(r.previous.failure_rate_change)
        ),
    ));
    for (section, slices) in [
        ("channel", &r.by_channel),
        ("provider", &r.by_provider),
        ("template", &r.by_template),
        ("category", &r.by_category),
    ] {
        for s in slices {
            out.push(row(section, &s.key, &s.totals, String::new()));
        }
    }
    for h in &r.busiest_hours {
        out.push(row(
            "busiest_hour",
            &h.start.to_rfc3339(),
            &h.totals,
            String::new(),
        ));
    }
    for d in &r.days {
        out.push(row(
            "day",
            &d.start.format("%Y-%m-%d").to_string(),
            &d.totals,
            String::new(),
        ));
    }
    let mut trend = row(
        "trend",
        "accepted_per_day",
        &Default::default(),
        String::new(),
    );
    trend.truncate(2);
    trend.extend((2..HEADER.len() - 1).map(|_| Cell::Empty));
    trend.push(Cell::Text(format!(
        "{} ({:+} per day)",
        r.trend.direction, r.trend.slope_per_day
    )));
    out.push(trend);
    out
}

/// The report as CSV (RFC 4180, a header line first).
pub fn csv(r: &Report) -> Result<Vec<u8>, csv::Error> {
    csv_of(r, &super::own::Section::ALL)
}

/// [`csv`] of the `total` row and the `sections` only.
pub fn csv_of(r: &Report, sections: &[super::own::Section]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(HEADER)?;
    for cells in rows_of(r, sections) {
        w.write_record(cells.iter().map(Cell::text))?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}
