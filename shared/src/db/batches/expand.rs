//! Expanding a batch chunk: taking it, finding or creating its subscribers in
//! one statement, and inserting its notifications.

use super::*;

/// A chunk taken for expansion, with its batch.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingChunk {
    /// The recipients as the caller sent them.
    pub recipients: Json<Value>,
    /// The batch's status.
    pub status: String,
    /// The template key.
    pub template_key: String,
    /// The channels.
    pub channels: Vec<String>,
    /// The locale.
    pub locale: Option<String>,
    /// Default template data.
    pub defaults: Json<Value>,
    /// The caller's metadata.
    pub metadata: Json<Value>,
}

/// Locks an unexpanded chunk for expansion in the caller's transaction. `None`
/// when it is already expanded (a duplicate job), or unknown. A concurrent
/// duplicate waits for the first and then finds it expanded.
#[tracing::instrument(skip_all)]
pub async fn take_chunk(
    db: &mut PgConnection,
    tenant_id: TenantId,
    batch_id: BatchId,
    seq: i32,
) -> Result<Option<PendingChunk>, sqlx::Error> {
    // The batch first, in the order cancel locks them. `for key share`
    // holds off a cancel (which locks the batch `for update` and then
    // cancels what expansions wrote) but not a close: closing changes
    // nothing an expansion reads, and with chunks expanding back to back
    // a close would otherwise wait for the last of them.
    sqlx::query_as!(
        PendingChunk,
        r#"select c.recipients as "recipients: Json<Value>", b.status, b.template_key, b.channels, b.locale,
                b.defaults as "defaults: Json<Value>", b.metadata as "metadata: Json<Value>"
         from batches b join batch_chunks c on c.batch_id = b.id
         where b.tenant_id = $1 and b.id = $2 and c.seq = $3 and c.expanded_at is null
         for key share of b for update of c"#,
        tenant_id as _,
        batch_id as _,
        seq,
    )
    .fetch_optional(db)
    .await
}

/// One notification a chunk expands into.
#[derive(Debug, Clone)]
pub struct Expanded {
    /// The recipient's place in the chunk.
    pub index: i32,
    /// The channel.
    pub channel: Channel,
    /// Address, number or subscriber id, as the channel reads it.
    pub recipient: String,
    /// The rendered content.
    pub content: Value,
    /// The subscriber (required for in-app).
    pub subscriber_id: Option<SubscriberId>,
    /// `queued`, or `failed`/`cancelled` when it cannot or must not be sent.
    pub status: NotificationStatus,
    /// Why, when not queued.
    pub error: Option<String>,
    /// Attempts allowed (the channel queue's).
    pub max_attempts: i32,
}

/// The subscribers of a chunk by external id, created where missing, in
/// one statement.
#[derive(Debug, Default)]
pub struct ChunkSubscribers {
    /// Each external id's subscriber.
    pub ids: HashMap<String, SubscriberId>,
    /// The subscribers this transaction created: no other transaction can
    /// see them before it commits, so they need no lock to order their
    /// inbox changes.
    pub created: HashMap<SubscriberId, NewSubscriber>,
}

/// A subscriber created by the transaction that places its first entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscriber {
    /// The event number it was created with: the numbers its first
    /// placement takes, so announcing them needs no second write of the row.
    pub event_seq: i64,
    /// Its external id (the topic its events go to).
    pub external_id: String,
}

impl ChunkSubscribers {
    /// The subscribers among `ids` that another transaction may also be
    /// changing: those not created here.
    pub fn to_lock(&self, ids: impl IntoIterator<Item = SubscriberId>) -> Vec<SubscriberId> {
        ids.into_iter()
            .filter(|id| !self.created.contains_key(id))
            .collect()
    }
}

/// Finds the subscribers with these external ids, creating the missing
/// ones, in one statement (the lookup does not see the rows the insert
/// adds, so each id is answered once, by one side or the other). The
/// lookup is one index probe per external id (a lateral `limit 1`): as
/// `external_id = any(..)` the planner could read the whole organisation's
/// subscribers instead, and did where it had no statistics, 480 ms a chunk
/// at a million subscribers. A
/// subscriber created here starts at the event number `entries` gives its
/// external id (see [`NewSubscriber`]), or 0.
#[tracing::instrument(skip_all, fields(count = external_ids.len()))]
pub async fn subscriber_ids(
    db: &mut PgConnection,
    tenant_id: TenantId,
    external_ids: &[String],
    entries: &HashMap<String, i64>,
) -> Result<ChunkSubscribers, sqlx::Error> {
    if external_ids.is_empty() {
        return Ok(ChunkSubscribers::default());
    }
    let new_ids: Vec<SubscriberId> = external_ids.iter().map(|_| SubscriberId::new()).collect();
    let seqs: Vec<i64> = external_ids
        .iter()
        .map(|e| entries.get(e).copied().unwrap_or(0))
        .collect();
    let rows = sqlx::query!(
        r#"with created as (
             insert into subscribers (id, tenant_id, external_id, event_seq)
             select n.id, $1, n.external_id, n.event_seq
             from unnest($2::uuid[], $3::text[], $4::int8[]) as n(id, external_id, event_seq)
             on conflict (tenant_id, external_id) do nothing
             returning external_id, id, event_seq
         )
         select external_id as "external_id!", id as "id!: SubscriberId", event_seq as "event_seq?" from created
         union all
         select s.external_id, s.id, null
         from (select distinct e from unnest($3::text[]) as e) as e(external_id)
         cross join lateral (
             select external_id, id from subscribers
             where tenant_id = $1 and external_id = e.external_id limit 1) s"#,
        tenant_id as _,
        &new_ids as _,
        external_ids,
        &seqs,
    )
    .fetch_all(&mut *db)
    .await?;
    let mut out = ChunkSubscribers::default();
    for row in rows {
        let (external_id, id, created) = (row.external_id, row.id, row.event_seq);
        if let Some(event_seq) = created {
            out.created.insert(
                id,
                NewSubscriber {
                    event_seq,
                    external_id: external_id.clone(),
                },
            );
        }
        out.ids.insert(external_id, id);
    }
    Ok(out)
}

/// The event numbers a subscriber created for `rows` would take if every
/// in-app row of theirs that is queued went into the inbox (one per entry
/// and one for the unread count), by external id; for
/// [`subscriber_ids`]. `external` gives each row's external id.
pub fn first_entries<'a>(
    rows: &[Expanded],
    external: impl IntoIterator<Item = Option<&'a str>>,
    place_inapp: bool,
) -> HashMap<String, i64> {
    let mut out: HashMap<String, i64> = HashMap::new();
    if !place_inapp {
        return out;
    }
    for (row, id) in rows.iter().zip(external) {
        if let Some(id) = id
            && row.channel == Channel::InApp
            && row.status == NotificationStatus::Queued
        {
            *out.entry(id.to_owned()).or_insert(1) += 1;
        }
    }
    out
}

/// What [`expand`] wrote.
#[derive(Debug, Default)]
pub struct ExpandedChunk {
    /// Notifications inserted.
    pub inserted: u64,
    /// In-app notifications inserted already in their subscribers' inboxes,
    /// with their subscribers; the caller announces them
    /// ([`crate::events::announce_placed`]) in the same transaction.
    pub placed: Vec<(SubscriberId, crate::db::inbox::Item)>,
    /// The subscribers created for the chunk, which announcing their
    /// entries needs (see [`NewSubscriber`]).
    pub created: HashMap<SubscriberId, NewSubscriber>,
}

/// How a chunk's notifications are written: what they share, and whether
/// in-app rows may go straight into their inboxes.
#[derive(Debug, Clone, Copy)]
pub struct Written<'a> {
    /// The batch's metadata, on every notification.
    pub metadata: &'a Value,
    /// The template's category.
    pub category: Option<&'a str>,
    /// Whether the template is critical.
    pub critical: bool,
    /// Whether in-app rows that need no per-recipient decision are placed
    /// in their inboxes here (see below).
    pub place_inapp: bool,
}

/// Inserts a chunk's notifications in one statement and marks the chunk
/// expanded, in the transaction that locked the unexpanded chunk
/// ([`take_chunk`]): a chunk's rows are written exactly once, by the
/// transaction that also marks it, so the insert needs no conflict
/// handling (the unique index on the row's place in its batch would refuse
/// a second copy rather than skip it).
///
/// Each notification is a send of its own, found by its id: its `send_id`
/// stays empty, which keeps it out of that index.
///
/// With `place_inapp`, in-app notifications that leave nothing to decide
/// (queued, with a subscriber who is locked here or was created in this
/// transaction, and critical or whose
/// subscriber has no stored preferences) are inserted already `sent`, in
/// the inbox: written once, never dispatched nor claimed. The caller passes
/// `false` when someone must hear of each send on its own (a tenant webhook
/// for `notification.sent`); those rows then go through the channel queue.
#[tracing::instrument(skip_all, fields(rows = rows.len()))]
pub async fn expand(
    db: &mut PgConnection,
    tenant_id: TenantId,
    batch_id: BatchId,
    seq: i32,
    rows: &[Expanded],
    how: &Written<'_>,
    known: &ChunkSubscribers,
) -> Result<ExpandedChunk, sqlx::Error> {
    let Written {
        metadata,
        category,
        critical,
        place_inapp,
    } = *how;
    let ids: Vec<NotificationId> = rows.iter().map(|_| NotificationId::new()).collect();
    let indexes: Vec<i32> = rows.iter().map(|r| r.index).collect();
    let channels: Vec<&str> = rows.iter().map(|r| r.channel.as_str()).collect();
    let recipients: Vec<&str> = rows.iter().map(|r| r.recipient.as_str()).collect();
    let contents: Vec<&Value> = rows.iter().map(|r| &r.content).collect();
    let subscribers: Vec<Option<SubscriberId>> = rows.iter().map(|r| r.subscriber_id).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    let errors: Vec<Option<&str>> = rows.iter().map(|r| r.error.as_deref()).collect();
    let attempts: Vec<i32> = rows.iter().map(|r| r.max_attempts).collect();
    if place_inapp {
        let inbox_owners = known.to_lock(
            rows.iter()
                .filter(|r| r.channel == Channel::InApp && r.status == NotificationStatus::Queued)
                .filter_map(|r| r.subscriber_id),
        );
        crate::db::events::lock_subscribers(db, tenant_id, inbox_owners).await?;
    }
    let written: Vec<(NotificationId, bool, DateTime<Utc>)> = sqlx::query!(
        r#"with r as (
             -- Whether each row goes straight into its inbox, decided once per row.
             select r.*, ($16 and r.channel = 'inapp' and r.status = 'queued'
                          and r.subscriber_id is not null
                          and ($5 or not exists (
                              select 1 from subscriber_preferences p
                              where p.tenant_id = $1 and p.subscriber_id = r.subscriber_id)))
                         as placed
             from unnest($8::uuid[], $9::int4[], $10::text[], $11::text[], $12::jsonb[],
                         $13::uuid[], $14::text[], $15::text[], $3::int4[])
                 as r(id, idx, channel, recipient, content, subscriber_id, status, error, max_attempts)
         )
         insert into notifications
             (id, tenant_id, channel, recipient, content, metadata, max_attempts, subscriber_id,
              category, critical, send_id, status, last_error, batch_id, batch_seq, batch_index,
              attempts, provider_message_id, sent_at, template_key)
         select r.id, $1, r.channel, r.recipient, r.content, $2, r.max_attempts, r.subscriber_id,
                $4, $5, null, case when r.placed then 'sent' else r.status end, r.error,
                $6, $7, r.idx,
                case when r.placed then 1 else 0 end,
                case when r.placed then 'inapp:' || r.id::text end,
                case when r.placed then now() end,
                (select b.template_key from batches b where b.id = $6)
         from r
         returning id as "id: NotificationId", status = 'sent' as "sent!", created_at"#,
        tenant_id as _,
        metadata,
        &attempts,
        category,
        critical,
        batch_id as _,
        seq,
        &ids as _,
        &indexes,
        channels.as_slice() as &[&str],
        recipients.as_slice() as &[&str],
        &contents as _,
        &subscribers as _,
        statuses.as_slice() as &[&str],
        &errors as _,
        place_inapp,
    )
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .map(|r| (r.id, r.sent, r.created_at))
    .collect();
    sqlx::query!(
        "update batch_chunks set expanded_at = now()
         where tenant_id = $1 and batch_id = $2 and seq = $3",
        tenant_id as _,
        batch_id as _,
        seq,
    )
    .execute(&mut *db)
    .await?;
    let by_id: HashMap<NotificationId, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let placed = written
        .iter()
        .filter(|(_, sent, _)| *sent)
        .filter_map(|(id, _, created_at)| {
            let row = &rows[*by_id.get(id)?];
            Some((
                row.subscriber_id?,
                crate::db::inbox::Item {
                    id: *id,
                    category: category.map(str::to_owned),
                    content: Json(row.content.clone()),
                    read_at: None,
                    archived_at: None,
                    created_at: *created_at,
                },
            ))
        })
        .collect();
    Ok(ExpandedChunk {
        inserted: written.len() as u64,
        placed,
        created: known.created.clone(),
    })
}

/// One recipient of a chunk, as stored with it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredRecipient {
    /// The subscriber's external id (in-app; it also links the others to the
    /// subscriber's preferences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_id: Option<String>,
    /// The email address (email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The E.164 number (sms, whatsapp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Template data, over the batch's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl StoredRecipient {
    /// Where `channel` sends to, if this recipient has it.
    pub fn address(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Email => self.email.as_deref(),
            Channel::Sms | Channel::WhatsApp => self.phone.as_deref(),
            Channel::InApp => self.subscriber_id.as_deref(),
            Channel::Push => None,
        }
    }
}
