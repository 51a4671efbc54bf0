//! Failed work, for operators: notifications that ended `failed` or
//! `bounced`, webhook deliveries that gave up, bulk CSV jobs that failed and
//! shipments whose UPS polls keep failing, read through the `failed_work`
//! view (one shape for every kind) and grouped by kind, error class,
//! provider and channel.
//!
//! Retrying makes an item due again like a fresh one; discarding hides it
//! from these lists and keeps its status and history. Both work on a
//! selection of ids here, and on everything a [`Filter`] matches through
//! [`super::ops_actions`], in bounded steps.
//!
//! Nothing here returns a recipient, a body or a provider's own text: the
//! view's `error` is written by the platform (see the migration).
//!
//! Functions take a [`Reach`] first: an operator's works across
//! organisations, one organisation's confines every read and write to it.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use super::scope::Reach;
use crate::domain::TenantId;

/// What can fail, in the order a filtered action walks them.
pub const KINDS: [&str; 4] = ["notification", "webhook", "bulk_job", "shipment"];

/// Most ids in one selection.
pub const MAX_SELECTION: usize = 1000;

/// Most groups in one listing.
pub const MAX_GROUPS: i64 = 500;

/// Sample ids shown per group.
pub const SAMPLES: usize = 5;

/// A kind of failed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A notification that ended `failed` or `bounced`.
    Notification,
    /// A webhook delivery that used up its attempts.
    Webhook,
    /// A bulk CSV job that failed.
    BulkJob,
    /// A shipment whose UPS polls are failing.
    Shipment,
}

impl Kind {
    /// Every kind, in [`KINDS`] order.
    pub const ALL: [Kind; 4] = [
        Kind::Notification,
        Kind::Webhook,
        Kind::BulkJob,
        Kind::Shipment,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        KINDS[self.index()]
    }

    /// Its position in [`KINDS`].
    pub fn index(self) -> usize {
        match self {
            Kind::Notification => 0,
            Kind::Webhook => 1,
            Kind::BulkJob => 2,
            Kind::Shipment => 3,
        }
    }

    /// The kind named `raw`.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

/// One group of failures: the values every item in it shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupKey {
    /// The kind.
    pub kind: Kind,
    /// The error class.
    pub error_class: String,
    /// The provider, if the kind has one.
    pub provider: Option<String>,
    /// The channel, if the kind has one.
    pub channel: Option<String>,
}

impl GroupKey {
    /// The opaque form handed to callers.
    pub fn encode(&self) -> String {
        let raw =
            serde_json::to_vec(&(self.kind, &self.error_class, &self.provider, &self.channel))
                .unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// A key [`GroupKey::encode`] made, or `None`.
    pub fn decode(raw: &str) -> Option<Self> {
        if raw.is_empty() || raw.len() > 1024 {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .ok()?;
        let (kind, error_class, provider, channel): (Kind, String, Option<String>, Option<String>) =
            serde_json::from_slice(&bytes).ok()?;
        Some(Self {
            kind,
            error_class,
            provider,
            channel,
        })
    }
}

/// Which failed items within a [`Reach`]: every field narrows, `None` does
/// not. Stored with a filtered action ([`super::ops_actions`]), whose
/// `tenant_id` keeps the reach (a `tenant` key stored by earlier versions
/// is ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// One kind.
    pub kind: Option<Kind>,
    /// One channel (notifications).
    pub channel: Option<String>,
    /// One provider.
    pub provider: Option<String>,
    /// One error class.
    pub error_class: Option<String>,
    /// Failed at or after.
    pub since: Option<DateTime<Utc>>,
    /// Failed before.
    pub until: Option<DateTime<Utc>>,
    /// One group.
    pub group: Option<GroupKey>,
}

impl Filter {
    /// Appends ` where …` for this filter within `reach` to a query on
    /// `failed_work`.
    pub(crate) fn push_where(&self, reach: Reach, qb: &mut QueryBuilder<'_, Postgres>) {
        qb.push(" where true");
        if let Reach::Tenant(t) = reach {
            qb.push(" and tenant_id = ").push_bind(t);
        }
        if let Some(k) = self.kind {
            qb.push(" and kind = ").push_bind(k.as_str());
        }
        if let Some(c) = &self.channel {
            qb.push(" and channel = ").push_bind(c.clone());
        }
        if let Some(p) = &self.provider {
            qb.push(" and provider = ").push_bind(p.clone());
        }
        if let Some(e) = &self.error_class {
            qb.push(" and error_class = ").push_bind(e.clone());
        }
        if let Some(s) = self.since {
            qb.push(" and failed_at >= ").push_bind(s);
        }
        if let Some(u) = self.until {
            qb.push(" and failed_at < ").push_bind(u);
        }
        if let Some(g) = &self.group {
            qb.push(" and kind = ")
                .push_bind(g.kind.as_str())
                .push(" and error_class = ")
                .push_bind(g.error_class.clone());
            match &g.provider {
                Some(p) => qb.push(" and provider = ").push_bind(p.clone()),
                None => qb.push(" and provider is null"),
            };
            match &g.channel {
                Some(c) => qb.push(" and channel = ").push_bind(c.clone()),
                None => qb.push(" and channel is null"),
            };
        }
    }
}

/// One group of failures.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Group {
    /// The kind.
    pub kind: String,
    /// The error class.
    pub error_class: String,
    /// The provider.
    pub provider: Option<String>,
    /// The channel.
    pub channel: Option<String>,
    /// Items in it.
    pub count: i64,
    /// The earliest failure.
    pub first_seen: DateTime<Utc>,
    /// The latest failure.
    pub last_seen: DateTime<Utc>,
    /// A few of its ids.
    pub sample_ids: Vec<Uuid>,
    /// Organisations it touches.
    pub organizations: i64,
}

impl Group {
    /// Its key.
    pub fn key(&self) -> GroupKey {
        GroupKey {
            kind: Kind::parse(&self.kind).unwrap_or(Kind::Notification),
            error_class: self.error_class.clone(),
            provider: self.provider.clone(),
            channel: self.channel.clone(),
        }
    }
}

/// The groups `filter` matches within `reach`, largest first (at most
/// [`MAX_GROUPS`]).
#[tracing::instrument(skip_all)]
pub async fn groups(
    db: impl PgExecutor<'_>,
    reach: Reach,
    filter: &Filter,
) -> Result<Vec<Group>, sqlx::Error> {
    let mut qb = QueryBuilder::new(
        "select kind, error_class, provider, channel, count(*) as count,
                min(failed_at) as first_seen, max(failed_at) as last_seen,
                (array_agg(id))[1:",
    );
    qb.push(SAMPLES as i32);
    qb.push(
        "] as sample_ids, count(distinct tenant_id) as organizations
         from failed_work",
    );
    filter.push_where(reach, &mut qb);
    qb.push(
        " group by kind, error_class, provider, channel
          order by count(*) desc, kind, error_class, provider, channel limit ",
    )
    .push_bind(MAX_GROUPS);
    qb.build_query_as().fetch_all(db).await
}

/// One failed item.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Item {
    /// Its kind.
    pub kind: String,
    /// Its id.
    pub id: Uuid,
    /// Its organisation.
    pub tenant_id: TenantId,
    /// Its channel (notifications).
    pub channel: Option<String>,
    /// The provider that failed it.
    pub provider: Option<String>,
    /// Its error class.
    pub error_class: String,
    /// What went wrong, in the platform's words.
    pub error: Option<String>,
    /// When it failed.
    pub failed_at: DateTime<Utc>,
    /// Attempts made (failed polls in a row for a shipment).
    pub attempts: Option<i32>,
}

/// Where a page of [`list`] starts: after this failure time and id.
pub type Seek = (DateTime<Utc>, Uuid);

/// Up to `limit` items `filter` matches within `reach`, newest failure
/// first, after `after`.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    reach: Reach,
    filter: &Filter,
    after: Option<Seek>,
    limit: i64,
) -> Result<Vec<Item>, sqlx::Error> {
    let mut qb = QueryBuilder::new(
        "select kind, id, tenant_id, channel, provider, error_class, error, failed_at, attempts
         from failed_work",
    );
    filter.push_where(reach, &mut qb);
    if let Some((at, id)) = after {
        qb.push(" and (failed_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    qb.push(" order by failed_at desc, id desc limit ")
        .push_bind(limit);
    qb.build_query_as().fetch_all(db).await
}

/// How many items `filter` matches within `reach` that failed at or before
/// `upto`.
#[tracing::instrument(skip_all)]
pub async fn count(
    db: impl PgExecutor<'_>,
    reach: Reach,
    filter: &Filter,
    upto: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let mut qb = QueryBuilder::new("select count(*) from failed_work");
    filter.push_where(reach, &mut qb);
    qb.push(" and failed_at <= ").push_bind(upto);
    qb.build_query_scalar().fetch_one(db).await
}

/// Retry or discard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Make the items due again.
    Retry,
    /// Take the items off the failed lists.
    Discard,
}

impl Action {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Discard => "discard",
        }
    }

    /// The action named `raw`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "retry" => Some(Action::Retry),
            "discard" => Some(Action::Discard),
            _ => None,
        }
    }
}

/// What a selection came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Retried or discarded.
    pub applied: u64,
    /// Found, but not failed now (already retried, discarded or never
    /// failed), or not retryable (content erased by retention, a bulk job).
    pub skipped: u64,
    /// Not found in scope (also another organisation's).
    pub not_found: u64,
}

/// Applies `action` to the items `ids` of one kind within `reach`; returns
/// the ids it changed. Each statement re-checks that the item is still
/// failed, so a concurrent retry or a row that moved on is left alone.
pub(crate) async fn apply(
    db: &mut PgConnection,
    reach: Reach,
    action: Action,
    kind: Kind,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    // Each statement is checked against the schema; they share their
    // parameters: the ids, then the reach.
    macro_rules! changed {
        ($sql:tt) => {
            sqlx::query_scalar!($sql, ids, reach.param())
                .fetch_all(&mut *db)
                .await
        };
    }
    match (action, kind) {
        // Due again exactly like a fresh send: queued, due now, not in
        // Redis, with its full attempts again.
        (Action::Retry, Kind::Notification) => {
            changed!(
                "update notifications
             set status = 'queued', run_at = now(), dispatched_at = null, attempts = 0,
                 last_error = null, sent_at = null, delivered_at = null
             where id = any($1) and ($2::uuid is null or tenant_id = $2)
               and status in ('failed', 'bounced') and discarded_at is null
               and content_redacted_at is null
             returning id"
            )
        }
        (Action::Retry, Kind::Webhook) => {
            changed!(
                "update webhook_deliveries d
             set status = 'queued', run_at = now(), dispatched_at = null, attempts = 0,
                 last_error = null, last_status_code = null
             from webhook_endpoints e
             where d.id = any($1) and ($2::uuid is null or d.tenant_id = $2)
               and d.status = 'failed' and d.discarded_at is null
               and e.tenant_id = d.tenant_id and e.id = d.endpoint_id and e.enabled
             returning d.id"
            )
        }
        // A failed file is not run again: it is uploaded again.
        (Action::Retry, Kind::BulkJob) => Ok(Vec::new()),
        (Action::Retry, Kind::Shipment) => {
            changed!(
                "update shipments set next_poll_at = now(), discarded_at = null
             where id = any($1) and ($2::uuid is null or tenant_id = $2)
               and poll_failures > 0 and (discarded_at is null or discarded_at < updated_at)
             returning id"
            )
        }
        (Action::Discard, Kind::Notification) => {
            changed!(
                "update notifications set discarded_at = now()
             where id = any($1) and ($2::uuid is null or tenant_id = $2)
               and status in ('failed', 'bounced') and discarded_at is null
             returning id"
            )
        }
        (Action::Discard, Kind::Webhook) => {
            changed!(
                "update webhook_deliveries set discarded_at = now()
             where id = any($1) and ($2::uuid is null or tenant_id = $2)
               and status = 'failed' and discarded_at is null
             returning id"
            )
        }
        (Action::Discard, Kind::BulkJob) => {
            changed!(
                "update bulk_jobs set discarded_at = now()
             where id = any($1) and ($2::uuid is null or tenant_id = $2)
               and status = 'failed' and discarded_at is null
             returning id"
            )
        }
        (Action::Discard, Kind::Shipment) => {
            changed!(
                "update shipments set discarded_at = now()
             where id = any($1) and ($2::uuid is null or tenant_id = $2)
               and poll_failures > 0 and (discarded_at is null or discarded_at < updated_at)
             returning id"
            )
        }
    }
}

/// The ids among `ids` of one kind that exist within `reach`.
async fn existing(
    db: &mut PgConnection,
    reach: Reach,
    kind: Kind,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    macro_rules! found {
        ($sql:tt) => {
            sqlx::query_scalar!($sql, ids, reach.param())
                .fetch_all(&mut *db)
                .await
        };
    }
    match kind {
        Kind::Notification => found!(
            "select id from notifications
             where id = any($1) and ($2::uuid is null or tenant_id = $2)"
        ),
        Kind::Webhook => found!(
            "select id from webhook_deliveries
             where id = any($1) and ($2::uuid is null or tenant_id = $2)"
        ),
        Kind::BulkJob => found!(
            "select id from bulk_jobs
             where id = any($1) and ($2::uuid is null or tenant_id = $2)"
        ),
        Kind::Shipment => found!(
            "select id from shipments
             where id = any($1) and ($2::uuid is null or tenant_id = $2)"
        ),
    }
}

/// Applies `action` to a selection (at most [`MAX_SELECTION`] items) within
/// `reach`, in one transaction; returns the counts and the tenants of the
/// items changed.
#[tracing::instrument(skip_all, fields(items = items.len()))]
pub async fn apply_selection(
    db: &mut PgConnection,
    reach: Reach,
    action: Action,
    items: &[(Kind, Uuid)],
) -> Result<Counts, sqlx::Error> {
    let mut counts = Counts::default();
    for kind in Kind::ALL {
        let mut ids: Vec<Uuid> = items
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, id)| *id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            continue;
        }
        let found = existing(db, reach, kind, &ids).await?;
        let changed = apply(db, reach, action, kind, &found).await?;
        counts.applied += changed.len() as u64;
        counts.skipped += (found.len() - changed.len()) as u64;
        counts.not_found += (ids.len() - found.len()) as u64;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys_round_trip_and_refuse_anything_else() {
        let key = GroupKey {
            kind: Kind::Notification,
            error_class: "mail_refused".into(),
            provider: Some("smtp".into()),
            channel: Some("email".into()),
        };
        assert_eq!(GroupKey::decode(&key.encode()), Some(key));
        let bare = GroupKey {
            kind: Kind::BulkJob,
            error_class: "file_empty".into(),
            provider: None,
            channel: None,
        };
        assert_eq!(GroupKey::decode(&bare.encode()), Some(bare));
        for bad in ["", "nope!", "bm9wZQ", &"A".repeat(2000)] {
            assert_eq!(GroupKey::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn kinds_are_named_and_ordered_once() {
        for (i, k) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("email"), None);
    }
}
