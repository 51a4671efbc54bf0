//! Topics (named groups of an organisation's subscribers), their members,
//! sends to a topic or to the whole organisation, and the platform's system
//! broadcasts.
//!
//! A send to an audience is not fanned out here: [`cut_chunks`] turns the
//! audience into the chunks of a batch that is already closed, in one
//! `insert … select`, 1,000 members a chunk, born undispatched. The
//! dispatcher then feeds them to the `batch_chunk` workers under its window,
//! which expand each chunk exactly once (see [`super::batches`]), applying
//! every member's preferences as for any batch. The membership is read once,
//! at the send: members added later are not reached, members removed later
//! still are.
//!
//! A broadcast ([`broadcast`]) writes its in-app (and email) notifications
//! in one statement per channel, undispatched; the channel workers place
//! them in the inboxes or send them.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::{BatchId, Channel, TenantId};

/// The constraint that keeps a topic key unique in its organisation.
pub const KEY_CONSTRAINT: &str = "topics_tenant_key_key";
/// Most external ids in one membership call.
pub const MAX_MEMBERS_PER_CALL: usize = 10_000;
/// Recipients in one chunk of a topic send.
pub const CHUNK: i64 = 1_000;

/// A topic.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Topic {
    /// Its id.
    pub id: Uuid,
    /// The caller's key for it, unique in the organisation.
    pub key: String,
    /// Its display name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// Members now.
    pub members: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "t.id, t.key, t.name, t.description, \
    (select count(*) from topic_members m where m.topic_id = t.id) as members, \
    t.created_at, t.updated_at";

/// Creates a topic; a key already used in the organisation violates
/// [`KEY_CONSTRAINT`].
#[tracing::instrument(skip_all)]
pub async fn create(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    key: &str,
    name: &str,
    description: Option<&str>,
) -> Result<Topic, sqlx::Error> {
    sqlx::query_as!(
        Topic,
        r#"with t as (
             insert into topics (id, tenant_id, key, name, description)
             values ($1, $2, $3, $4, $5)
             returning *
         )
         select t.id as "id!", t.key as "key!", t.name as "name!", t.description as "description?",
                0::int8 as "members!", t.created_at as "created_at!", t.updated_at as "updated_at!"
         from t"#,
        Uuid::now_v7(),
        tenant_id.0,
        key,
        name,
        description,
    )
    .fetch_one(db)
    .await
}

super::owned_rows! {
    "topics t", key: &str;
    /// Reads the topic with `key` of `tenant_id`.
    get -> Topic, COLUMNS;
    /// Up to `limit` topics of `tenant_id` by key, after `after`.
    list -> Topic, COLUMNS;
    /// Deletes a topic and its memberships; whether there was one.
    delete;
}

/// Renames or re-describes a topic; `None` when there is none.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    key: &str,
    name: &str,
    description: Option<&str>,
) -> Result<Option<Topic>, sqlx::Error> {
    sqlx::query_as!(
        Topic,
        r#"with t as (
             update topics set name = $3, description = $4
             where tenant_id = $1 and key = $2
             returning *
         )
         select t.id as "id!", t.key as "key!", t.name as "name!", t.description as "description?",
                (select count(*) from topic_members m where m.topic_id = t.id) as "members!",
                t.created_at as "created_at!", t.updated_at as "updated_at!"
         from t"#,
        tenant_id.0,
        key,
        name,
        description,
    )
    .fetch_optional(db)
    .await
}

/// What a membership change did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    /// Members added or removed now.
    pub changed: u64,
    /// Named subscribers that were already (added) or not (removed) members.
    pub unchanged: u64,
    /// External ids with no subscriber in the organisation, in the order given.
    pub unknown: Vec<String>,
}

async fn known(
    db: &mut PgConnection,
    tenant_id: TenantId,
    external_ids: &[String],
) -> Result<(Vec<Uuid>, Vec<String>), sqlx::Error> {
    // One index lookup per external id, whatever the planner knows of the
    // organisation's size (see `batches::subscriber_ids`).
    let found: Vec<(String, Uuid)> = sqlx::query!(
        r#"select s.external_id as "external_id!", s.id as "id!"
         from (select distinct e from unnest($2::text[]) as e) as e(external_id)
         cross join lateral (
             select external_id, id from subscribers
             where tenant_id = $1 and external_id = e.external_id limit 1) s"#,
        tenant_id.0,
        external_ids as &[String],
    )
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .map(|r| (r.external_id, r.id))
    .collect();
    let by_id: std::collections::HashSet<&str> = found.iter().map(|(e, _)| e.as_str()).collect();
    let unknown = external_ids
        .iter()
        .filter(|e| !by_id.contains(e.as_str()))
        .cloned()
        .collect();
    Ok((found.into_iter().map(|(_, id)| id).collect(), unknown))
}

/// What a statement over the subscribers `ids` (of the external ids
/// asked for, the rest `unknown`) changed, `changed` of them.
fn changed(ids: &[Uuid], changed: u64, unknown: Vec<String>) -> Changed {
    Changed {
        changed,
        unchanged: ids.len() as u64 - changed,
        unknown,
    }
}

/// Adds the subscribers of `external_ids` (distinct) to topic `topic_id` of
/// `tenant_id`, in one statement; external ids without a subscriber are
/// reported, not created.
#[tracing::instrument(skip_all, fields(count = external_ids.len()))]
pub async fn add_members(
    db: &mut PgConnection,
    tenant_id: TenantId,
    topic_id: Uuid,
    external_ids: &[String],
) -> Result<Changed, sqlx::Error> {
    let (ids, unknown) = known(db, tenant_id, external_ids).await?;
    let done = sqlx::query!(
        "insert into topic_members (topic_id, subscriber_id, tenant_id)
         select $2, s, $1 from unnest($3::uuid[]) as s
         on conflict (topic_id, subscriber_id) do nothing",
        tenant_id.0,
        topic_id,
        &ids,
    )
    .execute(&mut *db)
    .await?;
    Ok(changed(&ids, done.rows_affected(), unknown))
}

/// Removes the subscribers of `external_ids` (distinct) from topic
/// `topic_id` of `tenant_id`, in one statement.
#[tracing::instrument(skip_all, fields(count = external_ids.len()))]
pub async fn remove_members(
    db: &mut PgConnection,
    tenant_id: TenantId,
    topic_id: Uuid,
    external_ids: &[String],
) -> Result<Changed, sqlx::Error> {
    let (ids, unknown) = known(db, tenant_id, external_ids).await?;
    let done = sqlx::query!(
        "delete from topic_members
         where tenant_id = $1 and topic_id = $2 and subscriber_id = any($3)",
        tenant_id.0,
        topic_id,
        &ids,
    )
    .execute(&mut *db)
    .await?;
    Ok(changed(&ids, done.rows_affected(), unknown))
}

/// One member of a topic.
#[derive(Debug, Clone)]
pub struct Member {
    /// The subscriber's id (the page cursor).
    pub subscriber_id: Uuid,
    /// The organisation's id for the subscriber.
    pub external_id: String,
    /// When they joined the topic.
    pub added_at: DateTime<Utc>,
}

/// Up to `limit` members of a topic in membership key order, after the
/// subscriber `after`.
#[tracing::instrument(skip_all)]
pub async fn members(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    topic_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as!(
        Member,
        "select m.subscriber_id, s.external_id, m.created_at as added_at
         from topic_members m join subscribers s on s.id = m.subscriber_id
         where m.tenant_id = $1 and m.topic_id = $2
           and ($3::uuid is null or m.subscriber_id > $3)
         order by m.subscriber_id limit $4",
        tenant_id.0,
        topic_id,
        after,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Who a send goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The members of one topic.
    Topic(Uuid),
    /// Every subscriber of the organisation.
    Organization,
}

/// Cuts the chunks of batch `batch_id` from `audience` in one statement:
/// 1,000 recipients a chunk, numbered from 0, each carrying the member's
/// external id and the contact points `channels` need, stored undispatched
/// so the dispatcher pushes them under its window. The batch must be new
/// (no chunks yet). Returns the recipients written.
#[tracing::instrument(skip_all)]
pub async fn cut_chunks(
    db: &mut PgConnection,
    tenant_id: TenantId,
    batch_id: BatchId,
    audience: Audience,
    channels: &[Channel],
) -> Result<i64, sqlx::Error> {
    // WhatsApp reads the recipient's `phone`: their WhatsApp number when the
    // send has no sms to make, else the phone (both are E.164).
    let whatsapp_number =
        channels.contains(&Channel::WhatsApp) && !channels.contains(&Channel::Sms);
    let (topic, everyone) = match audience {
        Audience::Topic(id) => (Some(id), false),
        Audience::Organization => (None, true),
    };
    let counts: Vec<i64> = sqlx::query_scalar!(
        r#"with audience as (
             select s.external_id, s.email,
                    case when $4 then coalesce(s.whatsapp, s.phone) else s.phone end as phone,
                    row_number() over (order by s.id) - 1 as n
             from subscribers s
             where s.tenant_id = $1
               and ($5 or exists (select 1 from topic_members m
                                  where m.topic_id = $3 and m.subscriber_id = s.id))
         )
         insert into batch_chunks (batch_id, seq, tenant_id, recipients, recipient_count, request_hash)
         select $2, (n / $6)::int4, $1,
                jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                    'subscriber_id', external_id, 'email', email, 'phone', phone)) order by n),
                count(*)::int4, '\x00'::bytea
         from audience
         group by n / $6
         returning recipient_count::int8 as "recipient_count!""#,
        tenant_id.0,
        batch_id.0,
        topic,
        whatsapp_number,
        everyone,
        CHUNK,
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(counts.iter().sum())
}

/// Marks a batch cut from an audience closed: it takes no chunks from
/// callers and completes once its notifications are final.
#[tracing::instrument(skip_all)]
pub async fn close_cut_batch(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    batch_id: BatchId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update batches set status = 'closed', closed_at = now()
         where tenant_id = $1 and id = $2 and status = 'open'",
        tenant_id.0,
        batch_id.0,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A system broadcast to store.
#[derive(Debug, Clone)]
pub struct NewBroadcast<'a> {
    /// Who sends it, as the audit log names them.
    pub actor: &'a str,
    /// The in-app title (and the email's subject when none is given).
    pub title: &'a str,
    /// The message.
    pub body: &'a str,
    /// `info`, `warning` or `critical` (critical ignores opt-outs).
    pub severity: &'a str,
    /// Where a click leads.
    pub action_url: Option<&'a str>,
    /// With email: its subject.
    pub email_subject: Option<&'a str>,
    /// The organisations; `None`: every organisation.
    pub organizations: Option<&'a [TenantId]>,
    /// Attempts of an in-app and of an email notification.
    pub max_attempts: (i32, i32),
    /// The caller's `Idempotency-Key` and a hash of the request.
    pub idempotency: Option<(&'a str, Vec<u8>)>,
}

/// A stored broadcast.
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// Its id.
    pub id: Uuid,
    /// Who sent it.
    pub actor: String,
    /// Its title.
    pub title: String,
    /// Its severity.
    pub severity: String,
    /// The organisations named; `None`: every one.
    pub organizations: Option<Vec<Uuid>>,
    /// In-app notifications created.
    pub inapp_count: i64,
    /// Email notifications created.
    pub email_count: i64,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
}

/// What [`broadcast`] did.
#[derive(Debug, Clone)]
pub enum Broadcasted {
    /// Stored, with its notifications; the organisations it addresses.
    New(Broadcast, Vec<TenantId>),
    /// The idempotency key was used before by the same actor.
    Existing {
        /// The broadcast the first request created.
        broadcast: Broadcast,
        /// Whether the first request had the same body.
        same_request: bool,
    },
}

/// Stores a broadcast and, in the same transaction, one in-app notification
/// for every subscriber of its organisations (and one email for each that
/// has an address, when `email_subject` is given), born undispatched.
/// Across tenants by design: only platform admins call it.
#[tracing::instrument(skip_all)]
pub async fn broadcast(
    db: &mut PgConnection,
    new: NewBroadcast<'_>,
) -> Result<Broadcasted, sqlx::Error> {
    let (key, hash) = match &new.idempotency {
        Some((k, h)) => (Some(*k), Some(h.as_slice())),
        None => (None, None),
    };
    let orgs: Option<Vec<Uuid>> = new.organizations.map(|o| o.iter().map(|t| t.0).collect());
    let created: Option<Broadcast> = sqlx::query_as!(
        Broadcast,
        "insert into broadcasts (id, actor, title, body, severity, action_url, email_subject,
                                 organizations, idempotency_key, request_hash)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         on conflict (actor, idempotency_key) where idempotency_key is not null do nothing
         returning id, actor, title, severity, organizations, inapp_count, email_count, created_at",
        Uuid::now_v7(),
        new.actor,
        new.title,
        new.body,
        new.severity,
        new.action_url,
        new.email_subject,
        orgs.as_deref(),
        key,
        hash,
    )
    .fetch_optional(&mut *db)
    .await?;
    let Some(mut b) = created else {
        let (broadcast, stored): (Broadcast, Option<Vec<u8>>) = {
            let row = sqlx::query!(
                "select id, actor, title, severity, organizations, inapp_count, email_count,
                        created_at, request_hash
                 from broadcasts
                 where actor = $1 and idempotency_key = $2",
                new.actor,
                key,
            )
            .fetch_one(&mut *db)
            .await?;
            (
                Broadcast {
                    id: row.id,
                    actor: row.actor,
                    title: row.title,
                    severity: row.severity,
                    organizations: row.organizations,
                    inapp_count: row.inapp_count,
                    email_count: row.email_count,
                    created_at: row.created_at,
                },
                row.request_hash,
            )
        };
        return Ok(Broadcasted::Existing {
            broadcast,
            same_request: stored.as_deref() == hash,
        });
    };
    let critical = new.severity == "critical";
    let data = serde_json::json!({"broadcast_id": b.id, "severity": new.severity});
    let inapp = serde_json::json!({
        "title": new.title, "body": new.body, "action_url": new.action_url, "data": data,
    });
    let metadata = serde_json::json!({"broadcast_id": b.id});
    let reached = sqlx::query!(
        r#"with ins as (
             insert into notifications
                 (id, tenant_id, channel, recipient, content, metadata, max_attempts,
                  subscriber_id, category, critical, broadcast_id)
             select gen_random_uuid(), s.tenant_id, 'inapp', s.external_id, $2, $3, $4,
                    s.id, 'system', $5, $1
             from subscribers s
             where $6::uuid[] is null or s.tenant_id = any($6)
             returning tenant_id
         )
         select tenant_id as "tenant_id!", count(*) as "count!" from ins group by tenant_id"#,
        b.id,
        &inapp,
        &metadata,
        new.max_attempts.0,
        critical,
        orgs.as_deref(),
    )
    .fetch_all(&mut *db)
    .await?;
    b.inapp_count = reached.iter().map(|r| r.count).sum();
    if let Some(subject) = new.email_subject {
        let email = serde_json::json!({"subject": subject, "text": new.body});
        b.email_count = sqlx::query_scalar!(
            r#"with ins as (
                 insert into notifications
                     (id, tenant_id, channel, recipient, content, metadata, max_attempts,
                      subscriber_id, category, critical, broadcast_id)
                 select gen_random_uuid(), s.tenant_id, 'email', s.email, $2, $3, $4,
                        s.id, 'system', $5, $1
                 from subscribers s
                 where s.email is not null and ($6::uuid[] is null or s.tenant_id = any($6))
                 returning 1
             )
             select count(*) as "count!" from ins"#,
            b.id,
            &email,
            &metadata,
            new.max_attempts.1,
            critical,
            orgs.as_deref(),
        )
        .fetch_one(&mut *db)
        .await?;
    }
    sqlx::query!(
        "update broadcasts set inapp_count = $2, email_count = $3 where id = $1",
        b.id,
        b.inapp_count,
        b.email_count,
    )
    .execute(&mut *db)
    .await?;
    let tenants: Vec<TenantId> = sqlx::query_scalar!(
        r#"select id as "id: TenantId" from tenants where $1::uuid[] is null or id = any($1)"#,
        orgs.as_deref(),
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(Broadcasted::New(b, tenants))
}

/// Which of `ids` are organisations; the rest are returned.
#[tracing::instrument(skip_all)]
pub async fn unknown_organizations(
    db: impl PgExecutor<'_>,
    ids: &[TenantId],
) -> Result<Vec<TenantId>, sqlx::Error> {
    let raw: Vec<Uuid> = ids.iter().map(|t| t.0).collect();
    sqlx::query_scalar!(
        r#"select i as "i!: TenantId" from unnest($1::uuid[]) as i
         where not exists (select 1 from tenants t where t.id = i)"#,
        &raw,
    )
    .fetch_all(db)
    .await
}

/// A broadcast's notifications per channel and status.
#[tracing::instrument(skip_all)]
pub async fn broadcast_counts(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select channel, status, count(*) as "count!" from notifications
         where broadcast_id = $1 group by channel, status order by channel, status"#,
        id,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.channel, r.status, r.count))
        .collect())
}

/// Reads a broadcast.
#[tracing::instrument(skip_all)]
pub async fn get_broadcast(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Broadcast>, sqlx::Error> {
    sqlx::query_as!(
        Broadcast,
        "select id, actor, title, severity, organizations, inapp_count, email_count, created_at
         from broadcasts where id = $1",
        id,
    )
    .fetch_optional(db)
    .await
}
