//! Shipments and their carrier events (see [`crate::shipments`]).
//!
//! Polling claims: a sweep marks due shipments with the tick that claimed
//! them ([`claim_due`]) and moves `next_poll_at` past the tick (a lease), so
//! another sweep of the same tick, or an overlapping one, finds nothing to
//! claim; the group job then [`take`]s its claims, consuming them, so a
//! repeated job polls nothing twice.

use crate::{
    domain::{ShipmentId, TenantId},
    shipments::ShipmentStatus,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, types::Json};

/// A shipment as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Shipment {
    /// Its id.
    pub id: ShipmentId,
    /// Whose it is.
    pub tenant_id: TenantId,
    /// Always `ups` for now.
    pub carrier: String,
    /// The tracking number.
    pub tracking_number: String,
    /// The organisation's reference.
    pub reference: Option<String>,
    /// The status.
    pub status: ShipmentStatus,
    /// The carrier's expected delivery (or the delivery time).
    pub eta: Option<DateTime<Utc>>,
    /// The newest carrier event.
    pub last_event: Option<Json<Value>>,
    /// When UPS was last asked.
    pub last_polled_at: Option<DateTime<Utc>>,
    /// When the status last changed.
    pub status_changed_at: Option<DateTime<Utc>>,
    /// When it is next due for a poll; none once final.
    pub next_poll_at: Option<DateTime<Utc>>,
    /// Failed polls in a row.
    pub poll_failures: i32,
    /// Why the last poll failed, if it did.
    pub last_error: Option<String>,
    /// Who created it (`user:<subject>`-style reference or a subject).
    pub created_by: String,
    /// The user it is assigned to (their subject).
    pub assigned_to: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One carrier event.
#[derive(Debug, Clone, PartialEq)]
pub struct ShipmentEvent {
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Our status for it.
    pub status: String,
    /// UPS's status type (`I`, `D`, …).
    pub status_type: String,
    /// UPS's status code.
    pub status_code: String,
    /// UPS's description.
    pub description: String,
    /// Where (city, state, country).
    pub location: String,
}

const COLUMNS: &str = "id, tenant_id, carrier, tracking_number, reference, status, eta, last_event, last_polled_at, status_changed_at, next_poll_at, poll_failures, last_error, created_by, assigned_to, created_at, updated_at";

/// The constraint a second shipment with the same tracking number violates.
pub const TRACKING_CONSTRAINT: &str = "shipments_tenant_tracking_key";

/// A shipment to create.
#[derive(Debug, Clone)]
pub struct NewShipment<'a> {
    /// The tracking number (checked).
    pub tracking_number: &'a str,
    /// The organisation's reference.
    pub reference: Option<&'a str>,
    /// Who creates it.
    pub created_by: &'a str,
    /// Who it is assigned to.
    pub assigned_to: Option<&'a str>,
}

/// Creates a shipment, due for its first poll at once.
#[tracing::instrument(skip_all)]
pub async fn create(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: ShipmentId,
    new: NewShipment<'_>,
) -> Result<Shipment, sqlx::Error> {
    sqlx::query_as!(
        Shipment,
        r#"insert into shipments (id, tenant_id, tracking_number, reference, created_by, assigned_to, next_poll_at)
         values ($1, $2, $3, $4, $5, $6, now())
         returning id as "id: ShipmentId", tenant_id as "tenant_id: TenantId", carrier, tracking_number, reference,
             status as "status: ShipmentStatus", eta, last_event as "last_event: Json<Value>",
             last_polled_at, status_changed_at, next_poll_at, poll_failures, last_error, created_by,
             assigned_to, created_at, updated_at"#,
        id.0,
        tenant_id.0,
        new.tracking_number,
        new.reference,
        new.created_by,
        new.assigned_to,
    )
    .fetch_one(db)
    .await
}

super::owned_rows! {
    "shipments", id: ShipmentId;
    /// One shipment of `tenant_id`.
    get -> Shipment, COLUMNS;
    /// Deletes a shipment and its events; false if there was none.
    delete;
}

/// Shipments of `tenant_id`, newest first, optionally of one status, after
/// the cursor `before` (an id from the previous page).
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    status: Option<ShipmentStatus>,
    before: Option<ShipmentId>,
    limit: i64,
) -> Result<Vec<Shipment>, sqlx::Error> {
    sqlx::query_as!(
        Shipment,
        r#"select id as "id: ShipmentId", tenant_id as "tenant_id: TenantId", carrier, tracking_number, reference,
             status as "status: ShipmentStatus", eta, last_event as "last_event: Json<Value>",
             last_polled_at, status_changed_at, next_poll_at, poll_failures, last_error, created_by,
             assigned_to, created_at, updated_at
         from shipments
         where tenant_id = $1 and ($2::text is null or status = $2) and ($3::uuid is null or id < $3)
         order by id desc limit $4"#,
        tenant_id.0,
        status.map(ShipmentStatus::as_str),
        before.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// Replaces the reference and assignee.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: ShipmentId,
    reference: Option<&str>,
    assigned_to: Option<&str>,
) -> Result<Option<Shipment>, sqlx::Error> {
    sqlx::query_as!(
        Shipment,
        r#"update shipments set reference = $3, assigned_to = $4
         where tenant_id = $1 and id = $2
         returning id as "id: ShipmentId", tenant_id as "tenant_id: TenantId", carrier, tracking_number, reference,
             status as "status: ShipmentStatus", eta, last_event as "last_event: Json<Value>",
             last_polled_at, status_changed_at, next_poll_at, poll_failures, last_error, created_by,
             assigned_to, created_at, updated_at"#,
        tenant_id.0,
        id.0,
        reference,
        assigned_to,
    )
    .fetch_optional(db)
    .await
}

/// A shipment's events, newest first.
#[tracing::instrument(skip_all)]
pub async fn events(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: ShipmentId,
) -> Result<Vec<ShipmentEvent>, sqlx::Error> {
    sqlx::query_as!(
        ShipmentEvent,
        "select occurred_at, status, status_type, status_code, description, location
         from shipment_events where tenant_id = $1 and shipment_id = $2
         order by occurred_at desc, id desc",
        tenant_id.0,
        id.0,
    )
    .fetch_all(db)
    .await
}

/// How long a claim holds a shipment before another tick may claim it again
/// (its job was lost).
pub const CLAIM_LEASE_SECS: f64 = 600.0;

/// Claims up to `limit` shipments due at `tick`, across tenants, for that
/// tick. Each claimed shipment's `next_poll_at` moves to `tick` + the lease,
/// so no other sweep claims it meanwhile. Returns `(tenant, id)` sorted.
#[tracing::instrument(skip_all)]
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    tick: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<(TenantId, ShipmentId)>, sqlx::Error> {
    let mut rows: Vec<(TenantId, ShipmentId)> = sqlx::query!(
        r#"with due as (
             select id from shipments
             where next_poll_at <= $1 and (claimed_for is null or claimed_for < $1)
             order by next_poll_at
             limit $2
             for update skip locked
         )
         update shipments s
         set claimed_for = $1, next_poll_at = $1 + make_interval(secs => $3)
         from due where s.id = due.id
         returning s.tenant_id as "tenant_id: TenantId", s.id as "id: ShipmentId""#,
        tick,
        limit as i64,
        CLAIM_LEASE_SECS,
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|r| (r.tenant_id, r.id))
    .collect();
    rows.sort_unstable();
    Ok(rows)
}

/// Claims one shipment of `tenant_id` for an immediate poll at `at` (a
/// refresh); false if there is no such shipment.
#[tracing::instrument(skip_all)]
pub async fn claim_one(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: ShipmentId,
    at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update shipments
         set claimed_for = $3,
             next_poll_at = case when next_poll_at is null then null
                                 else greatest(next_poll_at, $3::timestamptz + make_interval(secs => $4)) end
         where tenant_id = $1 and id = $2",
        tenant_id.0,
        id.0,
        at,
        CLAIM_LEASE_SECS,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes the claims of `tick` on `ids`, consuming them: a repeated job for
/// the same tick gets nothing.
#[tracing::instrument(skip_all)]
pub async fn take(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    ids: &[ShipmentId],
    tick: DateTime<Utc>,
) -> Result<Vec<Shipment>, sqlx::Error> {
    sqlx::query_as!(
        Shipment,
        r#"update shipments set claimed_for = null
         where tenant_id = $1 and id = any($2) and claimed_for = $3
         returning id as "id: ShipmentId", tenant_id as "tenant_id: TenantId", carrier, tracking_number, reference,
             status as "status: ShipmentStatus", eta, last_event as "last_event: Json<Value>",
             last_polled_at, status_changed_at, next_poll_at, poll_failures, last_error, created_by,
             assigned_to, created_at, updated_at"#,
        tenant_id.0,
        ids as _,
        tick,
    )
    .fetch_all(db)
    .await
}

/// Appends events not seen before; returns how many were new.
#[tracing::instrument(skip_all)]
pub async fn append_events(
    tx: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    shipment_id: ShipmentId,
    events: &[ShipmentEvent],
) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut at = Vec::new();
    let mut status = Vec::new();
    let mut kind = Vec::new();
    let mut code = Vec::new();
    let mut description = Vec::new();
    let mut location = Vec::new();
    for e in events {
        at.push(e.occurred_at);
        status.push(e.status.as_str());
        kind.push(e.status_type.as_str());
        code.push(e.status_code.as_str());
        description.push(e.description.as_str());
        location.push(e.location.as_str());
    }
    let done = sqlx::query!(
        "insert into shipment_events
             (tenant_id, shipment_id, occurred_at, status, status_type, status_code, description, location)
         select $1, $2, * from unnest($3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
         on conflict on constraint shipment_events_once do nothing",
        tenant_id.0,
        shipment_id.0,
        &at,
        status.as_slice() as &[&str],
        kind.as_slice() as &[&str],
        code.as_slice() as &[&str],
        description.as_slice() as &[&str],
        location.as_slice() as &[&str],
    )
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

/// What a successful poll found.
#[derive(Debug, Clone)]
pub struct PollResult {
    /// The status now.
    pub status: ShipmentStatus,
    /// Whether it differs from before.
    pub changed: bool,
    /// The expected (or actual) delivery.
    pub eta: Option<DateTime<Utc>>,
    /// The newest event.
    pub last_event: Option<Value>,
    /// When it is next due; none when final.
    pub next_poll_at: Option<DateTime<Utc>>,
    /// A note (e.g. "UPS does not know this number yet"), kept in `last_error`.
    pub note: Option<String>,
    /// The poll's clock.
    pub at: DateTime<Utc>,
}

/// Records a poll that got an answer: status, ETA, last event, schedule.
#[tracing::instrument(skip_all)]
pub async fn record_poll(
    tx: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    id: ShipmentId,
    r: &PollResult,
) -> Result<Option<Shipment>, sqlx::Error> {
    sqlx::query_as!(
        Shipment,
        r#"update shipments
         set status = $3, eta = coalesce($4, eta), last_event = coalesce($5, last_event),
             last_polled_at = $6,
             status_changed_at = case when $7 then $6 else status_changed_at end,
             next_poll_at = $8, poll_failures = 0, last_error = $9
         where tenant_id = $1 and id = $2
         returning id as "id: ShipmentId", tenant_id as "tenant_id: TenantId", carrier, tracking_number, reference,
             status as "status: ShipmentStatus", eta, last_event as "last_event: Json<Value>",
             last_polled_at, status_changed_at, next_poll_at, poll_failures, last_error, created_by,
             assigned_to, created_at, updated_at"#,
        tenant_id.0,
        id.0,
        r.status.as_str(),
        r.eta,
        r.last_event.as_ref(),
        r.at,
        r.changed,
        r.next_poll_at,
        r.note.as_deref(),
    )
    .fetch_optional(&mut *tx)
    .await
}

/// Records a failed poll: one more failure in a row, the reason, and when to
/// try again.
#[tracing::instrument(skip_all)]
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: ShipmentId,
    error: &str,
    next_poll_at: DateTime<Utc>,
    counts: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update shipments
         set poll_failures = poll_failures + case when $5 then 1 else 0 end,
             last_error = $3, next_poll_at = $4
         where tenant_id = $1 and id = $2",
        tenant_id.0,
        id.0,
        error,
        next_poll_at,
        counts,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Queues a `shipment.updated` delivery to each enabled endpoint of
/// `tenant_id` subscribed to it, in the transaction of the change; the
/// dispatcher pushes them after the commit. The payload holds ids and
/// statuses only (no tracking number or reference).
#[tracing::instrument(skip_all)]
pub async fn enqueue_webhook(
    tx: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    data: &Value,
    max_attempts: u32,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "with targets as (
             select gen_random_uuid() as id, e.id as endpoint_id
             from webhook_endpoints e
             where e.tenant_id = $1 and e.enabled and 'shipment.updated' = any(e.events)
         )
         insert into webhook_deliveries (id, tenant_id, endpoint_id, event, max_attempts, payload)
         select t.id, $1, t.endpoint_id, 'shipment.updated', $3,
                jsonb_build_object(
                    'id', t.id,
                    'type', 'shipment.updated',
                    'created_at', to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    'data', $2::jsonb)
         from targets t",
        tenant_id.0,
        data,
        max_attempts.max(1) as i32,
    )
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}
