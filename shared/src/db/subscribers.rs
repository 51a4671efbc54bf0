//! Subscribers: a tenant's end users, known by the id their identity provider
//! gives them (the JWT subject, called the external id here).
//!
//! A subscriber comes into being either on first use (an in-app send, a
//! signed-in user; [`upsert`] keeps only the external id), with a platform
//! user ([`link_user`], whose sign-in address is its email) or when the tenant
//! stores their profile through the service API ([`upsert_profile`],
//! [`bulk_upsert`]): contact points, locale, time zone, name and free-form
//! data. Storing a profile replaces the whole profile; preferences, inbox and
//! real-time events are untouched.
//!
//! [`delete`] erases a subscriber: the row with its contact points,
//! preferences and real-time events goes, and the external id is free for a
//! new subscriber. Their notifications stay as delivery records, detached
//! from the subscriber. See [`delete`] for what happens to each.
//!
//! Contact points are personal data: neither they nor push tokens are ever
//! logged, and the types here print only which fields are present.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgExecutor, types::Json};

use crate::domain::{
    EmailAddress, ExternalId, Invalid, Locale, PersonName, PhoneNumber, PushToken, SubscriberId,
    TenantId, parse_time_zone,
};

/// Most push tokens a subscriber may have.
pub const MAX_PUSH_TOKENS: usize = 10;
/// Most keys in a subscriber's `data`.
pub const MAX_DATA_KEYS: usize = 50;
/// Most subscribers [`bulk_upsert`] takes at once.
pub const MAX_BULK: usize = 1_000;
/// The error recorded on notifications that were still pending when their
/// subscriber was deleted.
pub const DELETED_BEFORE_SENT: &str = "the subscriber was deleted before it was sent";

/// The id of `tenant_id`'s subscriber `external_id`, if there is one.
pub async fn find_id(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    external_id: &str,
) -> Result<Option<SubscriberId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select id as "id: SubscriberId" from subscribers where tenant_id = $1 and external_id = $2"#,
        tenant_id.0,
        external_id,
    )
    .fetch_optional(db)
    .await
}

/// The subscriber of `tenant_id` known as `external_id`, created on first use.
///
/// An existing subscriber is found without locking its row, so concurrent
/// sends to one person do not queue behind each other; only the first use
/// writes.
#[tracing::instrument(skip_all)]
pub async fn upsert(
    db: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    external_id: &str,
) -> Result<SubscriberId, sqlx::Error> {
    if let Some(id) = find_id(&mut *db, tenant_id, external_id).await? {
        return Ok(id);
    }
    // A concurrent first use may win the insert; then this one updates
    // nothing but still returns the row.
    sqlx::query_scalar!(
        r#"insert into subscribers (id, tenant_id, external_id) values ($1, $2, $3)
         on conflict (tenant_id, external_id) do update set external_id = excluded.external_id
         returning id as "id: SubscriberId""#,
        SubscriberId::new().0,
        tenant_id.0,
        external_id,
    )
    .fetch_one(&mut *db)
    .await
}

/// Creates the subscribers of `tenant_id` known as `external_ids` that do
/// not exist yet, in external id order, and returns them by external id. One
/// a concurrent transaction created first is absent: the caller finds it
/// ([`super::events::subscribers_named`]) once that one has committed.
/// Repeated ids are fine.
#[tracing::instrument(skip_all, fields(count = external_ids.len()))]
pub async fn create_missing(
    db: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    external_ids: &[String],
) -> Result<std::collections::HashMap<String, SubscriberId>, sqlx::Error> {
    let mut names: Vec<String> = external_ids.to_vec();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return Ok(Default::default());
    }
    let ids: Vec<uuid::Uuid> = names.iter().map(|_| SubscriberId::new().0).collect();
    let rows = sqlx::query!(
        r#"insert into subscribers (id, tenant_id, external_id)
         select n.id, $1, n.external_id
         from unnest($2::uuid[], $3::text[]) with ordinality as n(id, external_id, i)
         order by n.i
         on conflict (tenant_id, external_id) do nothing
         returning id as "id: SubscriberId", external_id"#,
        tenant_id.0,
        &ids,
        &names,
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.external_id, r.id)).collect())
}

/// The subscriber of platform user `user`: its external id is the user's id
/// (so in-app notices reach the user's inbox) and its email the user's
/// sign-in address. Created with the user; one that exists already keeps the
/// address it has and is given the sign-in address when it has none.
#[tracing::instrument(skip_all)]
pub async fn link_user(
    db: impl PgExecutor<'_>,
    user: &crate::db::users::User,
) -> Result<SubscriberId, sqlx::Error> {
    let email = EmailAddress::parse(&user.email).ok();
    sqlx::query_scalar!(
        r#"insert into subscribers (id, tenant_id, external_id, email) values ($1, $2, $3, $4)
         on conflict (tenant_id, external_id)
             do update set email = coalesce(subscribers.email, excluded.email)
         returning id as "id: SubscriberId""#,
        SubscriberId::new().0,
        user.tenant_id.0,
        user.id.to_string(),
        email.as_ref().map(EmailAddress::as_str),
    )
    .fetch_one(db)
    .await
}

/// The subscriber of `tenant_id` known as `external_id`, if there is one.
#[tracing::instrument(skip_all)]
pub async fn find(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    external_id: &str,
) -> Result<Option<SubscriberId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select id as "id: SubscriberId" from subscribers where tenant_id = $1 and external_id = $2"#,
        tenant_id.0,
        external_id,
    )
    .fetch_optional(db)
    .await
}

/// What a tenant stores about a subscriber, every field already valid.
/// Absent fields are stored as absent: a profile is always stored whole.
#[derive(Clone, Default, PartialEq)]
pub struct Profile {
    /// Their email address.
    pub email: Option<EmailAddress>,
    /// Their phone number for SMS.
    pub phone: Option<PhoneNumber>,
    /// Their WhatsApp number.
    pub whatsapp: Option<PhoneNumber>,
    /// Their devices' FCM registration tokens, without repeats, at most
    /// [`MAX_PUSH_TOKENS`].
    pub push_tokens: Vec<PushToken>,
    /// The language to write to them in.
    pub locale: Option<Locale>,
    /// Their time zone.
    pub timezone: Option<chrono_tz::Tz>,
    /// Their first name.
    pub first_name: Option<PersonName>,
    /// Their last name.
    pub last_name: Option<PersonName>,
    /// The tenant's own data about them, at most [`MAX_DATA_KEYS`] keys.
    pub data: Map<String, Value>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("email", &self.email.is_some())
            .field("phone", &self.phone.is_some())
            .field("whatsapp", &self.whatsapp.is_some())
            .field("push_tokens", &self.push_tokens.len())
            .field("locale", &self.locale)
            .field("timezone", &self.timezone)
            .field("first_name", &self.first_name.is_some())
            .field("last_name", &self.last_name.is_some())
            .field("data_keys", &self.data.len())
            .finish()
    }
}

/// A stored subscriber.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Its id.
    pub id: SubscriberId,
    /// The tenant's id for them.
    pub external_id: String,
    /// What the tenant stored about them.
    pub profile: Profile,
    /// When it was created (by a profile or on first use).
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// How to reach a subscriber, read at delivery time.
#[derive(Clone, Default, PartialEq)]
pub struct Contacts {
    /// Their email address.
    pub email: Option<EmailAddress>,
    /// Their phone number for SMS.
    pub phone: Option<PhoneNumber>,
    /// Their WhatsApp number.
    pub whatsapp: Option<PhoneNumber>,
    /// Their devices' FCM registration tokens.
    pub push_tokens: Vec<PushToken>,
    /// The language to write to them in.
    pub locale: Option<Locale>,
    /// Their time zone.
    pub timezone: Option<chrono_tz::Tz>,
}

impl fmt::Debug for Contacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contacts")
            .field("email", &self.email.is_some())
            .field("phone", &self.phone.is_some())
            .field("whatsapp", &self.whatsapp.is_some())
            .field("push_tokens", &self.push_tokens.len())
            .field("locale", &self.locale)
            .field("timezone", &self.timezone)
            .finish()
    }
}

/// A subscriber row as stored.
struct Row {
    id: SubscriberId,
    external_id: String,
    email: Option<String>,
    phone: Option<String>,
    whatsapp: Option<String>,
    push_tokens: Vec<String>,
    locale: Option<String>,
    timezone: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    data: Json<Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A stored value that no longer parses: written around the API.
fn decode(column: &str, e: Invalid) -> sqlx::Error {
    sqlx::Error::Decode(format!("subscribers.{column}: {e}").into())
}

fn opt<T>(
    column: &str,
    value: Option<String>,
    parse: impl Fn(&str) -> Result<T, Invalid>,
) -> Result<Option<T>, sqlx::Error> {
    value
        .map(|v| parse(&v).map_err(|e| decode(column, e)))
        .transpose()
}

/// The stored tokens that still parse. One stored before the token rule
/// became printable ASCII only can reach no device (FCM tokens are ASCII),
/// so it is passed over rather than failing the whole subscriber; the next
/// profile write replaces the list.
fn tokens(values: Vec<String>) -> Result<Vec<PushToken>, sqlx::Error> {
    let total = values.len();
    let kept: Vec<PushToken> = values
        .iter()
        .filter_map(|t| PushToken::parse(t).ok())
        .collect();
    if kept.len() < total {
        tracing::warn!(
            passed_over = total - kept.len(),
            "stored push tokens that are not device registration tokens were passed over"
        );
    }
    Ok(kept)
}

impl TryFrom<Row> for Subscriber {
    type Error = sqlx::Error;

    fn try_from(r: Row) -> Result<Self, sqlx::Error> {
        let data = match r.data.0 {
            Value::Object(m) => m,
            _ => return Err(decode("data", Invalid("is not an object".into()))),
        };
        Ok(Self {
            id: r.id,
            external_id: r.external_id,
            profile: Profile {
                email: opt("email", r.email, EmailAddress::parse)?,
                phone: opt("phone", r.phone, PhoneNumber::parse)?,
                whatsapp: opt("whatsapp", r.whatsapp, PhoneNumber::parse)?,
                push_tokens: tokens(r.push_tokens)?,
                locale: opt("locale", r.locale, Locale::parse)?,
                timezone: opt("timezone", r.timezone, parse_time_zone)?,
                first_name: opt("first_name", r.first_name, PersonName::parse)?,
                last_name: opt("last_name", r.last_name, PersonName::parse)?,
                data,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// What [`upsert_profile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    /// The subscriber.
    pub id: SubscriberId,
    /// Whether it was created (rather than updated).
    pub created: bool,
}

/// What [`bulk_upsert`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkUpserted {
    /// Subscribers created.
    pub created: u64,
    /// Subscribers whose profile was replaced.
    pub updated: u64,
}

fn record(id: SubscriberId, external_id: &ExternalId, p: &Profile) -> Value {
    serde_json::json!({
        "id": id,
        "external_id": external_id,
        "email": p.email,
        "phone": p.phone,
        "whatsapp": p.whatsapp,
        "push_tokens": p.push_tokens,
        "locale": p.locale,
        "timezone": p.timezone.map(|tz| tz.name()),
        "first_name": p.first_name,
        "last_name": p.last_name,
        "data": p.data,
    })
}

/// Creates or replaces the profiles of `rows` in one statement; returns each
/// row's id and whether it was created.
async fn upsert_many(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    rows: &[(ExternalId, Profile)],
) -> Result<Vec<(SubscriberId, bool)>, sqlx::Error> {
    let records: Vec<Value> = rows
        .iter()
        .map(|(external_id, p)| record(SubscriberId::new(), external_id, p))
        .collect();
    let done = sqlx::query!(
        r#"insert into subscribers
             (id, tenant_id, external_id, email, phone, whatsapp, push_tokens, locale, timezone,
              first_name, last_name, data)
         select r.id, $1, r.external_id, r.email, r.phone, r.whatsapp, coalesce(r.push_tokens, '{}'),
                r.locale, r.timezone, r.first_name, r.last_name, coalesce(r.data, '{}'::jsonb)
         from jsonb_to_recordset($2) as r(
             id uuid, external_id text, email text, phone text, whatsapp text, push_tokens text[],
             locale text, timezone text, first_name text, last_name text, data jsonb)
         on conflict (tenant_id, external_id) do update set
             email = excluded.email, phone = excluded.phone, whatsapp = excluded.whatsapp,
             push_tokens = excluded.push_tokens, locale = excluded.locale,
             timezone = excluded.timezone, first_name = excluded.first_name,
             last_name = excluded.last_name, data = excluded.data
         returning id as "id: SubscriberId", (xmax = 0) as "created!""#,
        tenant_id.0,
        Value::Array(records),
    )
    .fetch_all(db)
    .await?;
    Ok(done.into_iter().map(|r| (r.id, r.created)).collect())
}

/// Creates the subscriber of `tenant_id` known as `external_id` with
/// `profile`, or replaces the profile of the one there is (every field:
/// what `profile` leaves out is erased).
#[tracing::instrument(skip_all)]
pub async fn upsert_profile(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    external_id: &ExternalId,
    profile: &Profile,
) -> Result<Upserted, sqlx::Error> {
    let rows = [(external_id.clone(), profile.clone())];
    let (id, created) = upsert_many(db, tenant_id, &rows)
        .await?
        .pop()
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok(Upserted { id, created })
}

/// Creates or replaces, as [`upsert_profile`] does, up to [`MAX_BULK`]
/// subscribers of `tenant_id` in one statement: all of them or none. Each
/// external id may appear once; more rows or a repeated id are refused with
/// [`sqlx::Error::InvalidArgument`] before anything is written.
#[tracing::instrument(skip_all, fields(rows = rows.len()))]
pub async fn bulk_upsert(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    rows: &[(ExternalId, Profile)],
) -> Result<BulkUpserted, sqlx::Error> {
    if rows.len() > MAX_BULK {
        return Err(sqlx::Error::InvalidArgument(format!(
            "at most {MAX_BULK} subscribers at once"
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    if !rows.iter().all(|(id, _)| seen.insert(id)) {
        return Err(sqlx::Error::InvalidArgument(
            "an external id appears twice".into(),
        ));
    }
    if rows.is_empty() {
        return Ok(BulkUpserted::default());
    }
    let done = upsert_many(db, tenant_id, rows).await?;
    let created = done.iter().filter(|(_, created)| *created).count() as u64;
    Ok(BulkUpserted {
        created,
        updated: done.len() as u64 - created,
    })
}

/// The subscriber of `tenant_id` known as `external_id`, with their profile.
#[tracing::instrument(skip_all)]
pub async fn get_by_external_id(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    external_id: &str,
) -> Result<Option<Subscriber>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as!(
        Row,
        r#"select id as "id: SubscriberId", external_id, email, phone, whatsapp, push_tokens,
             locale, timezone, first_name, last_name, data as "data: Json<Value>", created_at,
             updated_at
         from subscribers where tenant_id = $1 and external_id = $2"#,
        tenant_id.0,
        external_id,
    )
    .fetch_optional(db)
    .await?;
    row.map(Subscriber::try_from).transpose()
}

/// How to reach a subscriber, as `contact_row!` reads it.
type ContactRow = (
    SubscriberId,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<String>,
    Option<String>,
    Option<String>,
);

/// How to reach a subscriber, with the user's sign-in address: the
/// statements of [`contacts`] and [`contacts_by_external_id`] read it as
/// one row. Only an external id shaped like a uuid is cast, so other ids
/// never fail the statement.
macro_rules! contact_row {
    ($r:ident) => {
        (
            $r.id,
            $r.email,
            $r.sign_in,
            $r.phone,
            $r.whatsapp,
            $r.push_tokens,
            $r.locale,
            $r.timezone,
        )
    };
}

fn contacts_of(row: ContactRow) -> Result<(SubscriberId, Contacts), sqlx::Error> {
    let (id, email, sign_in, phone, whatsapp, push_tokens, locale, timezone) = row;
    let email = match email {
        Some(own) => Some(EmailAddress::parse(&own).map_err(|e| decode("email", e))?),
        // A sign-in address that no longer parses (written around the API)
        // is no address rather than a failed send.
        None => sign_in.and_then(|e| EmailAddress::parse(&e).ok()),
    };
    Ok((
        id,
        Contacts {
            email,
            phone: opt("phone", phone, PhoneNumber::parse)?,
            whatsapp: opt("whatsapp", whatsapp, PhoneNumber::parse)?,
            push_tokens: tokens(push_tokens)?,
            locale: opt("locale", locale, Locale::parse)?,
            timezone: opt("timezone", timezone, parse_time_zone)?,
        },
    ))
}

/// How to reach subscriber `subscriber_id` of `tenant_id`, if they exist.
///
/// This is where a platform user's notice address is decided, for every
/// notice and send: a user's subscriber (external id = the user's id, see
/// [`link_user`]) is written to at the email address it stores, and at the
/// user's sign-in address when it stores none.
#[tracing::instrument(skip_all)]
pub async fn contacts(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
) -> Result<Option<Contacts>, sqlx::Error> {
    let row: Option<ContactRow> = sqlx::query!(
        r#"select s.id as "id: SubscriberId", s.email, u.email as "sign_in?", s.phone, s.whatsapp,
             s.push_tokens, s.locale, s.timezone
         from subscribers s
         left join users u on u.tenant_id = s.tenant_id
             and u.id = case when s.external_id
                 ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                 then s.external_id::uuid end
         where s.tenant_id = $1 and s.id = $2"#,
        tenant_id.0,
        subscriber_id.0,
    )
    .map(|r| contact_row!(r))
    .fetch_optional(db)
    .await?;
    Ok(row.map(contacts_of).transpose()?.map(|(_, c)| c))
}

/// The subscriber `external_id` of `tenant_id` and how to reach them (as
/// [`contacts`] decides it), in one statement; `None` when they do not
/// exist.
#[tracing::instrument(skip_all)]
pub async fn contacts_by_external_id(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    external_id: &str,
) -> Result<Option<(SubscriberId, Contacts)>, sqlx::Error> {
    let row: Option<ContactRow> = sqlx::query!(
        r#"select s.id as "id: SubscriberId", s.email, u.email as "sign_in?", s.phone, s.whatsapp,
             s.push_tokens, s.locale, s.timezone
         from subscribers s
         left join users u on u.tenant_id = s.tenant_id
             and u.id = case when s.external_id
                 ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                 then s.external_id::uuid end
         where s.tenant_id = $1 and s.external_id = $2"#,
        tenant_id.0,
        external_id,
    )
    .map(|r| contact_row!(r))
    .fetch_optional(db)
    .await?;
    row.map(contacts_of).transpose()
}

/// Forgets one push token of subscriber `subscriber_id` of `tenant_id` (FCM
/// said it is no longer registered). False if they did not have it.
#[tracing::instrument(skip_all)]
pub async fn remove_push_token(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    token: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update subscribers set push_tokens = array_remove(push_tokens, $3)
         where tenant_id = $1 and id = $2 and $3 = any(push_tokens)",
        tenant_id.0,
        subscriber_id.0,
        token,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What [`delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// The subscriber that is gone.
    pub id: SubscriberId,
    /// Their notifications that were still pending and will not be sent.
    pub cancelled: u64,
    /// Their notifications kept as delivery records, now without a
    /// subscriber (the cancelled ones included).
    pub detached: u64,
}

/// Erases the subscriber of `tenant_id` known as `external_id`; `None` if
/// there is none. Run it in a transaction (it takes several statements).
///
/// * The row goes, and with it the contact points, the profile, the
///   preferences and the real-time events. The external id is free again:
///   the next use creates a new subscriber who sees nothing of the old one.
/// * Their notifications are kept as delivery records (status, attempts,
///   recipient, timestamps), without a link to the subscriber.
/// * Those still pending (`queued`, or `sending` at this moment) are marked
///   `failed` with [`DELETED_BEFORE_SENT`] and their content is erased, so
///   nothing more is sent to them. An attempt already in flight may still
///   reach them; its outcome is then not recorded.
/// * Their in-app notifications leave the inbox (`deleted_at`) and their
///   content is erased. The content of other sent notifications stays
///   until the retention sweep, as for everyone's.
#[tracing::instrument(skip_all)]
pub async fn delete(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    external_id: &str,
) -> Result<Option<Deleted>, sqlx::Error> {
    // Locking the row orders this after sends and inbox changes in flight
    // for the subscriber, and makes later ones wait and create a new one.
    let id: Option<SubscriberId> = sqlx::query_scalar!(
        r#"select id as "id: SubscriberId" from subscribers
         where tenant_id = $1 and external_id = $2 for update"#,
        tenant_id.0,
        external_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        return Ok(None);
    };
    let cancelled = sqlx::query!(
        "update notifications
         set status = 'failed', last_error = $3, run_at = now(), dispatched_at = null,
             content = '{}'::jsonb, metadata = '{}'::jsonb, content_redacted_at = now()
         where tenant_id = $1 and subscriber_id = $2 and status in ('queued', 'deferred', 'sending')",
        tenant_id.0,
        id.0,
        DELETED_BEFORE_SENT,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let detached = sqlx::query!(
        "update notifications
         set subscriber_id = null,
             deleted_at = case when channel = 'inapp' then coalesce(deleted_at, now()) else deleted_at end,
             content = case when channel = 'inapp' then '{}'::jsonb else content end,
             metadata = case when channel = 'inapp' then '{}'::jsonb else metadata end,
             content_redacted_at = case when channel = 'inapp'
                 then coalesce(content_redacted_at, now()) else content_redacted_at end
         where tenant_id = $1 and subscriber_id = $2",
        tenant_id.0,
        id.0,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Their real-time events are theirs alone; nothing else names them.
    sqlx::query!(
        "delete from subscriber_events where tenant_id = $1 and subscriber_id = $2",
        tenant_id.0,
        id.0,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "delete from subscribers where tenant_id = $1 and id = $2",
        tenant_id.0,
        id.0,
    )
    .execute(&mut *tx)
    .await?;
    Ok(Some(Deleted {
        id,
        cancelled,
        detached,
    }))
}
