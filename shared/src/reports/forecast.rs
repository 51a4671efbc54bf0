//! The next 7 days' volume per channel, from the last 8 weeks of daily
//! accepted counts in the rollups.
//!
//! The model is a seasonal mean: each coming day is forecast as the mean of
//! the same weekday over the last (up to) 4 weeks, which follows the weekly
//! rhythm of clinics' sends (quiet weekends) and ignores one unusual day
//! better than the plain seasonal-naive copy of last week. Its error is
//! measured on held-out history: the model is fitted on the history before
//! the last 7 days and compared with what those days really were (mean
//! absolute error and mean absolute percentage error).

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::db::{delivery_reports, scope::Reach};

/// Days of history read.
pub const HISTORY_DAYS: u64 = 56;
/// Days forecast.
pub const HORIZON: usize = 7;
const SEASON: usize = 7;
const WEEKS: usize = 4;

/// Forecasts `horizon` days after `history` (oldest first, one value per
/// day): the mean of the same weekday over the last up to 4 weeks.
pub fn seasonal_mean(history: &[f64], horizon: usize) -> Vec<f64> {
    (0..horizon)
        .map(|h| {
            let same: Vec<f64> = (1..=WEEKS)
                .filter_map(|w| {
                    let back = w * SEASON;
                    let i = history.len() as isize + (h % SEASON) as isize - back as isize;
                    (i >= 0).then(|| history.get(i as usize).copied()).flatten()
                })
                .collect();
            if same.is_empty() {
                history.iter().sum::<f64>() / (history.len().max(1) as f64)
            } else {
                same.iter().sum::<f64>() / same.len() as f64
            }
        })
        .collect()
}

/// The error of [`seasonal_mean`] on the last `HORIZON` days of `history`,
/// fitted on what came before: (mean absolute error, mean absolute
/// percentage error over the days with volume). `None` with less than two
/// weeks of history.
pub fn holdout_error(history: &[f64]) -> Option<(f64, Option<f64>)> {
    if history.len() < SEASON + HORIZON {
        return None;
    }
    let (train, test) = history.split_at(history.len() - HORIZON);
    let predicted = seasonal_mean(train, HORIZON);
    let mae = predicted
        .iter()
        .zip(test)
        .map(|(p, a)| (p - a).abs())
        .sum::<f64>()
        / HORIZON as f64;
    let pct: Vec<f64> = predicted
        .iter()
        .zip(test)
        .filter(|(_, a)| **a > 0.0)
        .map(|(p, a)| (p - a).abs() / a * 100.0)
        .collect();
    let mape = (!pct.is_empty()).then(|| pct.iter().sum::<f64>() / pct.len() as f64);
    Some((mae, mape))
}

/// One channel's forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelForecast {
    /// The channel.
    pub channel: String,
    /// The next 7 days (UTC), each with its forecast of accepted
    /// notifications.
    pub days: Vec<(NaiveDate, f64)>,
    /// Days of history it was computed from.
    pub history_days: usize,
    /// Mean absolute error on the held-out last 7 days of history.
    pub holdout_mae: Option<f64>,
    /// Mean absolute percentage error on the held-out last 7 days.
    pub holdout_mape: Option<f64>,
}

/// Forecasts the 7 days from `today` (a UTC day) for each channel (or only
/// `channel`) within `reach`.
#[tracing::instrument(skip_all)]
pub async fn forecast(
    pool: &PgPool,
    reach: Reach,
    channel: Option<&str>,
    today: NaiveDate,
) -> Result<Vec<ChannelForecast>, sqlx::Error> {
    let start = today - Days::new(HISTORY_DAYS);
    let from: DateTime<Utc> = start.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let to: DateTime<Utc> = today.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let rows = delivery_reports::accepted_per_channel_day(pool, reach, from, to, channel).await?;
    let mut channels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    if let Some(c) = channel {
        channels.push(c.to_owned());
    }
    channels.sort();
    channels.dedup();
    let n = HISTORY_DAYS as usize;
    Ok(channels
        .into_iter()
        .map(|c| {
            let mut history = vec![0.0; n];
            for (_, day, count) in rows.iter().filter(|r| r.0 == c) {
                let i = (day.date_naive() - start).num_days();
                if let Some(v) = usize::try_from(i).ok().and_then(|i| history.get_mut(i)) {
                    *v = *count as f64;
                }
            }
            // History starts at the channel's first active day.
            let first = history.iter().position(|v| *v > 0.0).unwrap_or(n);
            let history = &history[first..];
            let predicted = seasonal_mean(history, HORIZON);
            let error = holdout_error(history);
            ChannelForecast {
                channel: c,
                days: predicted
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (today + Days::new(i as u64), (v * 10.0).round() / 10.0))
                    .collect(),
                history_days: history.len(),
                holdout_mae: error.map(|e| (e.0 * 10.0).round() / 10.0),
                holdout_mape: error.and_then(|e| e.1).map(|v| (v * 10.0).round() / 10.0),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clinic-like series: weekdays around 1,000 rising 1% a week,
    /// weekends around 150, with deterministic noise of ±8%.
    fn series(days: usize) -> Vec<f64> {
        let mut seed: u64 = 42;
        (0..days)
            .map(|d| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.16;
                let base = if d % 7 >= 5 { 150.0 } else { 1000.0 };
                base * (1.0 + 0.01 * (d / 7) as f64) * (1.0 + noise)
            })
            .collect()
    }

    #[test]
    fn a_weekly_pattern_is_followed() {
        let history = series(56);
        let next = seasonal_mean(&history, 7);
        // Day 56 is a Monday-like weekday, days 61 and 62 the weekend.
        assert!(next[0] > 900.0 && next[5] < 250.0, "{next:?}");
    }

    #[test]
    fn holdout_error_on_a_synthetic_clinic_series() {
        let (mae, mape) = holdout_error(&series(56)).unwrap();
        let mape = mape.unwrap();
        // Reported in the README.
        assert!(mape < 10.0, "mae {mae:.1}, mape {mape:.1}%");
        println!("mae {mae:.1}, mape {mape:.1}%");
    }

    #[test]
    fn too_little_history_has_no_error() {
        assert_eq!(holdout_error(&[1.0; 10]), None);
        assert_eq!(seasonal_mean(&[], 2), vec![0.0, 0.0]);
    }
}
