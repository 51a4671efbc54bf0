//! Send quotas: counting a send's notifications against its
//! organisation's quotas in Redis (one Lua script for every channel and
//! period the send touches), giving units back, and reading the usage.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use shared::{
    db::{limits::Quota, quota_notices::Kind},
    domain::{Channel, TenantId},
};

pub use shared::quotas::Period;

use super::{Limiter, LimiterError, WARNING_SHARE, notices::notice};
use crate::error::ApiError;

/// Takes `add` from every quota counter of a send, or nothing.
/// KEYS: counter, warned flag, refused flag, for each quota. ARGV: quota,
/// add, expiry (unix seconds), warning level, for each quota. Returns
/// {1, crossed, used, ...} with, for each quota, 1 where the counter crossed
/// its warning level for the first time this period and the count after the
/// send, or {0, index (1-based), used, first} for the
/// first quota the send would pass, `first` 1 when no send was refused by
/// that quota before this period.
pub(super) const TAKE_QUOTA: &str = r"
local n = #KEYS / 3
for i = 1, n do
  local used = tonumber(redis.call('GET', KEYS[3 * i - 2]) or '0')
  if used + tonumber(ARGV[4 * i - 2]) > tonumber(ARGV[4 * i - 3]) then
    local first = 0
    if redis.call('SET', KEYS[3 * i], '1', 'NX', 'EXAT', ARGV[4 * i - 1]) then
      first = 1
    end
    return {0, i, used, first}
  end
end
local out = {1}
for i = 1, n do
  local used = redis.call('INCRBY', KEYS[3 * i - 2], ARGV[4 * i - 2])
  redis.call('EXPIREAT', KEYS[3 * i - 2], ARGV[4 * i - 1])
  local crossed = 0
  if used >= tonumber(ARGV[4 * i]) then
    if redis.call('SET', KEYS[3 * i - 1], '1', 'NX', 'EXAT', ARGV[4 * i - 1]) then
      crossed = 1
    end
  end
  out[2 * i] = crossed
  out[2 * i + 1] = used
end
return out
";

/// Gives back what [`TAKE_QUOTA`] took. KEYS: counters. ARGV: amounts.
pub(super) const GIVE_BACK: &str = r"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local left = redis.call('DECRBY', KEYS[i], ARGV[i])
    if left < 0 then redis.call('SET', KEYS[i], '0', 'KEEPTTL') end
  end
end
return 0
";

impl Limiter {
    /// Takes `counts` (notifications per channel) from the organisation's
    /// quotas, or refuses the whole send with 429 naming the quota it would
    /// pass. While Redis is away, nothing is counted and the send goes
    /// through.
    pub async fn take_quota(
        self: &Arc<Self>,
        tenant: TenantId,
        request_id: Option<&str>,
        counts: &[(Channel, u64)],
    ) -> Result<QuotaTicket, ApiError> {
        let mut ticket = QuotaTicket {
            limiter: self.clone(),
            taken: Vec::new(),
        };
        let quotas = self.quotas_of(tenant).await?;
        if quotas.is_empty() {
            return Ok(ticket);
        }
        let now = Utc::now();
        let mut applied = Vec::new();
        for (channel, add) in counts {
            if *add == 0 {
                continue;
            }
            for q in quotas.iter().filter(|q| q.channel == channel.as_str()) {
                let Some(period) = Period::parse(&q.period) else {
                    continue;
                };
                applied.push((q.clone(), period, *add));
            }
        }
        if applied.is_empty() {
            return Ok(ticket);
        }
        let mut invocation = self.take_quota.prepare_invoke();
        for (q, period, add) in &applied {
            let key = self.quota_key(tenant, &q.channel, *period, now);
            let warn_at = ((q.quota as f64) * WARNING_SHARE).ceil().max(1.0) as i64;
            invocation
                .key(&key)
                .key(format!("{key}:warned"))
                .key(format!("{key}:refused"))
                .arg(q.quota)
                .arg(*add)
                .arg(period.end(now).timestamp() + 60)
                .arg(warn_at);
        }
        let answer: Vec<i64> = match self.run(invocation).await {
            Ok(a) => a,
            Err(error) => {
                metrics::counter!("send_quota_unavailable_total").increment(1);
                if !matches!(error, LimiterError::BackingOff) {
                    tracing::warn!(%error, "send quotas unavailable; the send is not counted");
                }
                return Ok(ticket);
            }
        };
        if answer.first() == Some(&0) {
            let index = answer.get(1).copied().unwrap_or(1).max(1) as usize - 1;
            let used = answer.get(2).copied().unwrap_or(0);
            let (q, period, add) = &applied[index.min(applied.len() - 1)];
            metrics::counter!("send_quota_refusals_total", "channel" => q.channel.clone(), "period" => period.as_str())
                .increment(1);
            if answer.get(3) == Some(&1) {
                let flag = format!(
                    "{}:refused",
                    self.quota_key(tenant, &q.channel, *period, now)
                );
                let notice = notice(q, *period, now, used, Kind::Exceeded);
                self.notify(tenant, request_id, notice, flag).await;
            }
            let resets = period.end(now);
            return Err(ApiError::QuotaExceeded {
                name: format!("{}:{}", q.channel, period.as_str()),
                detail: format!(
                    "the {} {} quota of {} is used up: {used} sent this period, this request needs {add}; it renews at {}",
                    period.adjective(),
                    q.channel,
                    q.quota,
                    resets.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ),
                retry_after: (resets - now).num_seconds().max(1) as u64,
            });
        }
        for (i, (q, period, add)) in applied.iter().enumerate() {
            let key = self.quota_key(tenant, &q.channel, *period, now);
            if answer.get(2 * i + 1) == Some(&1) {
                let used = answer.get(2 * i + 2).copied().unwrap_or(0);
                let flag = format!("{key}:warned");
                let notice = notice(q, *period, now, used, Kind::Warning);
                self.notify(tenant, request_id, notice, flag).await;
            }
            ticket.taken.push((key, *add));
        }
        Ok(ticket)
    }

    /// [`Limiter::take_quota`] for a request that may repeat one accepted
    /// before: a refusal stands unless `replayed` finds that it was
    /// ([`Limiter::unless_replayed`]).
    pub async fn take_quota_unless_replayed(
        self: &Arc<Self>,
        tenant: TenantId,
        request_id: &str,
        counts: &[(Channel, u64)],
        replayed: impl std::future::Future<Output = Result<bool, sqlx::Error>>,
    ) -> Result<QuotaTicket, ApiError> {
        let taken = self.take_quota(tenant, Some(request_id), counts).await;
        self.unless_replayed(taken, replayed).await
    }

    /// `taken`, unless it refused a quota and `replayed` finds that the
    /// request was accepted before: a replay answers as the first time did
    /// and takes nothing. `replayed` is only asked on a refusal.
    pub async fn unless_replayed(
        self: &Arc<Self>,
        taken: Result<QuotaTicket, ApiError>,
        replayed: impl std::future::Future<Output = Result<bool, sqlx::Error>>,
    ) -> Result<QuotaTicket, ApiError> {
        match taken {
            Err(refused @ ApiError::QuotaExceeded { .. }) => {
                if replayed.await? {
                    Ok(QuotaTicket {
                        limiter: self.clone(),
                        taken: Vec::new(),
                    })
                } else {
                    Err(refused)
                }
            }
            other => other,
        }
    }

    fn quota_key(
        &self,
        tenant: TenantId,
        channel: &str,
        period: Period,
        now: DateTime<Utc>,
    ) -> String {
        shared::quotas::key(&self.prefix, tenant, channel, period, now)
    }

    /// How much of each of the organisation's quotas this period has used;
    /// `None` where Redis cannot say.
    pub async fn usage(&self, tenant: TenantId, quotas: &[Quota]) -> Vec<Option<i64>> {
        let now = Utc::now();
        if quotas.is_empty() || self.backing_off() {
            return vec![None; quotas.len()];
        }
        let keys: Vec<String> = quotas
            .iter()
            .map(|q| {
                Period::parse(&q.period)
                    .map(|p| self.quota_key(tenant, &q.channel, p, now))
                    .unwrap_or_default()
            })
            .collect();
        let mut conn = self.conn.clone();
        let read = tokio::time::timeout(
            self.config.redis_timeout(),
            redis::cmd("MGET")
                .arg(&keys)
                .query_async::<Vec<Option<i64>>>(&mut conn),
        )
        .await;
        match read {
            Ok(Ok(used)) => used.into_iter().map(|u| Some(u.unwrap_or(0))).collect(),
            _ => {
                self.failed();
                vec![None; quotas.len()]
            }
        }
    }
}

/// Quota units taken for a send. They stay taken unless given back, which
/// a route does when the request turns out to send nothing new (a replayed
/// idempotent request) or is refused after the count.
#[derive(Debug)]
#[must_use = "a send either keeps its quota units or gives them back"]
pub struct QuotaTicket {
    limiter: Arc<Limiter>,
    taken: Vec<(String, u64)>,
}

impl QuotaTicket {
    /// The send sent nothing new: gives its units back.
    pub async fn give_back(self) {
        if self.taken.is_empty() {
            return;
        }
        let mut invocation = self.limiter.give_back.prepare_invoke();
        for (key, n) in &self.taken {
            invocation.key(key).arg(*n);
        }
        if let Err(error) = self.limiter.run::<i64>(invocation).await {
            tracing::warn!(%error, "cannot give back the quota units of a send");
        }
    }
}

/// How many notifications `channels` (one per notification) put on each
/// channel.
pub fn per_channel(channels: impl IntoIterator<Item = Channel>) -> Vec<(Channel, u64)> {
    let mut counts: Vec<(Channel, u64)> = Vec::new();
    for c in channels {
        match counts.iter_mut().find(|(k, _)| *k == c) {
            Some((_, n)) => *n += 1,
            None => counts.push((c, 1)),
        }
    }
    counts
}
