//! `/api/v1/services/subscribers`: the tenant's end users as the tenant
//! describes them (contact points, locale, time zone, name, data), one at a
//! time or up to 1,000 in one call, and their preferences.
//!
//! A subscriber is addressed by the tenant's own id for them (the external
//! id, percent-encoded in the path). `PUT` replaces the whole profile: a
//! field left out is erased. Preferences are the same document the user
//! reads and writes at `/api/v1/users/me/preferences`.
//!
//! `DELETE` erases the subscriber (contact points, preferences, inbox) and
//! frees the external id; their notifications stay as delivery records
//! without the link (see [`shared::db::subscribers::delete`]). It is
//! audited. Another tenant's subscribers are never found.
//!
//! `POST /bulk` is the bulk call; `GET`, `PUT` and `DELETE` on `/bulk`
//! still address the subscriber whose external id is `bulk`.

use std::collections::{HashMap, hash_map::Entry};

use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use serde::Deserialize;
use serde_json::{Map, Value};
use shared::{
    db::{
        self, audit, preferences,
        subscribers::{self, MAX_BULK, MAX_DATA_KEYS, MAX_PUSH_TOKENS, Profile, Subscriber},
    },
    domain::{
        EmailAddress, ExternalId, Locale, PersonName, PhoneNumber, Problems, PushToken,
        parse_time_zone,
    },
    preferences::Preferences,
};

use crate::{body::StrictJson, error::ApiError, extract::ServiceCtx, routes::ApiTags};

/// The external id that shares its path with the bulk call.
const BULK: &str = "bulk";

/// The subscriber endpoints.
#[derive(Debug)]
pub struct SubscribersApi;

/// A subscriber's profile as stored by `PUT`: every field is optional, and
/// one left out (or `null`) is erased. Unknown fields are refused.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct SubscriberInput {
    /// Their email address, e.g. `pat@example.org`.
    pub email: Option<String>,
    /// Their phone number for SMS, in E.164 form (`+15005550006`).
    pub phone: Option<String>,
    /// Their WhatsApp number, in E.164 form.
    pub whatsapp: Option<String>,
    /// Their devices' FCM registration tokens: at most 10, each 1 to 4,096
    /// characters without whitespace. A repeated token is stored once.
    pub push_tokens: Option<Vec<String>>,
    /// A BCP 47 language tag, e.g. `en` or `en-US`.
    pub locale: Option<String>,
    /// An IANA time zone, e.g. `America/Chicago`.
    pub timezone: Option<String>,
    /// Their first name, at most 200 characters.
    pub first_name: Option<String>,
    /// Their last name, at most 200 characters.
    pub last_name: Option<String>,
    /// Your own data about them: a JSON object of at most 50 keys.
    pub data: Option<Value>,
}

/// One subscriber in a bulk call: the external id and the profile.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct BulkSubscriber {
    /// Your id for them (the JWT subject they sign in with): 1 to 255
    /// characters without control characters.
    #[serde(default)]
    pub external_id: String,
    /// Their email address.
    pub email: Option<String>,
    /// Their phone number for SMS, in E.164 form.
    pub phone: Option<String>,
    /// Their WhatsApp number, in E.164 form.
    pub whatsapp: Option<String>,
    /// Their devices' FCM registration tokens (at most 10).
    pub push_tokens: Option<Vec<String>>,
    /// A BCP 47 language tag.
    pub locale: Option<String>,
    /// An IANA time zone.
    pub timezone: Option<String>,
    /// Their first name.
    pub first_name: Option<String>,
    /// Their last name.
    pub last_name: Option<String>,
    /// Your own data about them (a JSON object of at most 50 keys).
    pub data: Option<Value>,
}

impl BulkSubscriber {
    fn split(self) -> (String, SubscriberInput) {
        (
            self.external_id,
            SubscriberInput {
                email: self.email,
                phone: self.phone,
                whatsapp: self.whatsapp,
                push_tokens: self.push_tokens,
                locale: self.locale,
                timezone: self.timezone,
                first_name: self.first_name,
                last_name: self.last_name,
                data: self.data,
            },
        )
    }
}

/// A bulk create-or-replace.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// 1 to 1,000 subscribers, each external id once.
    #[serde(default)]
    pub subscribers: Vec<BulkSubscriber>,
}

/// What a bulk call did.
#[derive(Debug, Clone, Object)]
pub struct BulkResult {
    /// Subscribers created.
    pub created: u64,
    /// Subscribers whose profile was replaced.
    pub updated: u64,
}

/// A stored subscriber.
#[derive(Debug, Clone, Object)]
pub struct SubscriberView {
    /// Your id for them.
    pub external_id: String,
    /// Their email address.
    pub email: Option<String>,
    /// Their phone number for SMS.
    pub phone: Option<String>,
    /// Their WhatsApp number.
    pub whatsapp: Option<String>,
    /// Their devices' FCM registration tokens.
    pub push_tokens: Vec<String>,
    /// Their language.
    pub locale: Option<String>,
    /// Their time zone.
    pub timezone: Option<String>,
    /// Their first name.
    pub first_name: Option<String>,
    /// Their last name.
    pub last_name: Option<String>,
    /// Your data about them.
    pub data: Value,
    /// When the subscriber was created (by a profile, a send or a sign-in).
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Subscriber> for SubscriberView {
    fn from(s: Subscriber) -> Self {
        let p = s.profile;
        let text = |v: Option<&str>| v.map(str::to_owned);
        Self {
            external_id: s.external_id,
            email: text(p.email.as_ref().map(EmailAddress::as_str)),
            phone: text(p.phone.as_ref().map(PhoneNumber::as_str)),
            whatsapp: text(p.whatsapp.as_ref().map(PhoneNumber::as_str)),
            push_tokens: p
                .push_tokens
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            locale: text(p.locale.as_ref().map(Locale::as_str)),
            timezone: p.timezone.map(|tz| tz.name().to_owned()),
            first_name: text(p.first_name.as_ref().map(PersonName::as_str)),
            last_name: text(p.last_name.as_ref().map(PersonName::as_str)),
            data: Value::Object(p.data),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// Answers to `PUT`.
#[derive(Debug, ApiResponse)]
pub enum PutResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<SubscriberView>),
    /// The profile was replaced.
    #[oai(status = 200)]
    Updated(Json<SubscriberView>),
}

/// Answers to `GET`.
#[derive(Debug, ApiResponse)]
pub enum GetResponse {
    /// The subscriber.
    #[oai(status = 200)]
    Ok(Json<SubscriberView>),
}

/// Answers to `DELETE`.
#[derive(Debug, ApiResponse)]
pub enum DeleteResponse {
    /// Erased.
    #[oai(status = 204)]
    Deleted,
}

/// Answers to a bulk call.
#[derive(Debug, ApiResponse)]
pub enum BulkResponse {
    /// Every subscriber was stored.
    #[oai(status = 200)]
    Ok(Json<BulkResult>),
}

/// Answers with preferences.
#[derive(Debug, ApiResponse)]
pub enum PreferencesResponse {
    /// The preferences, as at `/api/v1/users/me/preferences`: `enabled`
    /// (`false` turns everything off), `channels` (`{"email": false}`),
    /// `categories` (`{"marketing": {"enabled": false}}` or per channel) and
    /// `quiet_hours` (`{"start": "22:00", "end": "07:00", "timezone":
    /// "America/Chicago"}`).
    #[oai(status = 200)]
    Ok(Json<Value>),
}

fn parse_external_id(p: &mut Problems, name: String, raw: &str) -> Option<ExternalId> {
    if raw.is_empty() {
        p.add(name, "is required");
        return None;
    }
    ExternalId::parse(raw).map_err(|e| p.add(name, e.0)).ok()
}

/// Validates a profile; fields are named `{prefix}{field}`. Only a profile
/// without problems is returned.
fn profile(p: &mut Problems, prefix: &str, input: SubscriberInput) -> Option<Profile> {
    let before = p.0.len();
    let name = |field: &str| format!("{prefix}{field}");
    let email = p.opt(name("email"), input.email.as_deref(), EmailAddress::parse);
    let phone = p.opt(name("phone"), input.phone.as_deref(), PhoneNumber::parse);
    let whatsapp = p.opt(
        name("whatsapp"),
        input.whatsapp.as_deref(),
        PhoneNumber::parse,
    );
    let raw_tokens = input.push_tokens.unwrap_or_default();
    let mut push_tokens: Vec<PushToken> = Vec::with_capacity(raw_tokens.len());
    if raw_tokens.len() > MAX_PUSH_TOKENS {
        p.add(
            name("push_tokens"),
            format!("must hold at most {MAX_PUSH_TOKENS} tokens"),
        );
    } else {
        for (i, raw) in raw_tokens.iter().enumerate() {
            if let Some(t) = p.opt(
                name(&format!("push_tokens[{i}]")),
                Some(raw),
                PushToken::parse,
            ) && !push_tokens.contains(&t)
            {
                push_tokens.push(t);
            }
        }
    }
    let locale = p.opt(name("locale"), input.locale.as_deref(), Locale::parse);
    let timezone = p.opt(name("timezone"), input.timezone.as_deref(), parse_time_zone);
    let first_name = p.opt(
        name("first_name"),
        input.first_name.as_deref(),
        PersonName::parse,
    );
    let last_name = p.opt(
        name("last_name"),
        input.last_name.as_deref(),
        PersonName::parse,
    );
    let data = match input.data {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) if m.len() > MAX_DATA_KEYS => {
            p.add(
                name("data"),
                format!("must have at most {MAX_DATA_KEYS} keys"),
            );
            Map::new()
        }
        Some(Value::Object(m)) => m,
        Some(_) => {
            p.add(name("data"), "must be a JSON object");
            Map::new()
        }
    };
    (p.0.len() == before).then_some(Profile {
        email,
        phone,
        whatsapp,
        push_tokens,
        locale,
        timezone,
        first_name,
        last_name,
        data,
    })
}

/// Validates a bulk call as a whole: every problem of every item is named.
fn bulk(req: BulkRequest) -> Result<Vec<(ExternalId, Profile)>, ApiError> {
    let n = req.subscribers.len();
    if n == 0 || n > MAX_BULK {
        return Err(ApiError::invalid(
            "subscribers",
            format!("must hold 1 to {MAX_BULK} subscribers; this holds {n}"),
        ));
    }
    let mut p = Problems::default();
    let mut first_seen: HashMap<String, usize> = HashMap::with_capacity(n);
    let mut rows = Vec::with_capacity(n);
    for (i, item) in req.subscribers.into_iter().enumerate() {
        let prefix = format!("subscribers[{i}].");
        let (raw_id, input) = item.split();
        let id = parse_external_id(&mut p, format!("{prefix}external_id"), &raw_id);
        if let Some(id) = &id {
            match first_seen.entry(id.as_str().to_owned()) {
                Entry::Occupied(first) => p.add(
                    format!("{prefix}external_id"),
                    format!(
                        "repeats subscribers[{}].external_id; each subscriber may appear once",
                        first.get()
                    ),
                ),
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
        }
        if let (Some(id), Some(profile)) = (id, profile(&mut p, &prefix, input)) {
            rows.push((id, profile));
        }
    }
    if p.0.is_empty() {
        Ok(rows)
    } else {
        Err(ApiError::from(p))
    }
}

/// The external id in a path, or 400 naming `external_id`.
/// Characters an external id may hold, as a JSON Schema pattern: no control
/// characters, and at least one that is not white space.
const EXTERNAL_ID_PATTERN: &str =
    r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$";

/// A subscriber's external id as a path segment. The document states what
/// [`ExternalId::parse`] accepts (1 to 255 characters, not blank, no control
/// characters); the handlers parse it, so a bad id is named in the same
/// problem as any body field beside it.
#[derive(Debug, Clone)]
pub struct ExternalIdSegment(pub String);

impl poem_openapi::types::Type for ExternalIdSegment {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> std::borrow::Cow<'static, str> {
        "ExternalId".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        poem_openapi::registry::MetaSchemaRef::Inline(Box::new(
            poem_openapi::registry::MetaSchema {
                min_length: Some(1),
                max_length: Some(ExternalId::MAX_CHARS),
                pattern: Some(EXTERNAL_ID_PATTERN.to_owned()),
                ..poem_openapi::registry::MetaSchema::new("string")
            },
        ))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl poem_openapi::types::ParseFromParameter for ExternalIdSegment {
    fn parse_from_parameter(value: &str) -> poem_openapi::types::ParseResult<Self> {
        Ok(Self(value.to_owned()))
    }
}

fn path_id(raw: &str) -> Result<ExternalId, ApiError> {
    let mut p = Problems::default();
    parse_external_id(&mut p, "external_id".into(), raw).ok_or_else(|| ApiError::from(p))
}

fn preferences_json(prefs: &Preferences) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        serde_json::to_value(prefs).map_err(anyhow::Error::from)?,
    ))
}

#[OpenApi(
    prefix_path = "/api/v1/services/subscribers",
    tag = "ApiTags::Subscribers"
)]
impl SubscribersApi {
    /// Create a subscriber, or replace their whole profile.
    ///
    /// Answers 201 when created and 200 when replaced. Fields left out are
    /// erased; preferences and inbox are untouched.
    #[oai(
        path = "/:external_id",
        method = "put",
        operation_id = "subscribers.put"
    )]
    async fn put(
        &self,
        cx: ServiceCtx<'_>,
        external_id: Path<ExternalIdSegment>,
        body: StrictJson<SubscriberInput>,
    ) -> Result<PutResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let mut p = Problems::default();
        let id = parse_external_id(&mut p, "external_id".into(), &external_id.0.0);
        let profile = profile(&mut p, "", body.0);
        let (Some(id), Some(profile)) = (id, profile) else {
            return Err(ApiError::from(p));
        };
        let mut tx = cx.state.pool.begin().await?;
        let done = subscribers::upsert_profile(&mut *tx, tenant_id, &id, &profile).await?;
        let stored = subscribers::get_by_external_id(&mut *tx, tenant_id, id.as_str())
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the stored subscriber vanished")))?;
        tx.commit().await?;
        tracing::info!(subscriber_id = %done.id, created = done.created, "subscriber stored");
        let view = Json(SubscriberView::from(stored));
        Ok(if done.created {
            PutResponse::Created(view)
        } else {
            PutResponse::Updated(view)
        })
    }

    /// Read a subscriber's profile.
    #[oai(
        path = "/:external_id",
        method = "get",
        operation_id = "subscribers.get"
    )]
    async fn get(
        &self,
        cx: ServiceCtx<'_>,
        external_id: Path<ExternalIdSegment>,
    ) -> Result<GetResponse, ApiError> {
        let id = path_id(&external_id.0.0)?;
        let stored =
            subscribers::get_by_external_id(&cx.state.pool, cx.auth.0.tenant_id, id.as_str())
                .await?
                .ok_or(ApiError::NotFound("subscriber"))?;
        Ok(GetResponse::Ok(Json(stored.into())))
    }

    /// Erase a subscriber.
    ///
    /// Their contact points, profile, preferences and inbox are erased and
    /// the external id is free again. Their notifications are kept as
    /// delivery records; any not yet sent are cancelled (`failed`).
    #[oai(
        path = "/:external_id",
        method = "delete",
        operation_id = "subscribers.delete"
    )]
    async fn delete(
        &self,
        cx: ServiceCtx<'_>,
        external_id: Path<ExternalIdSegment>,
    ) -> Result<DeleteResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let id = path_id(&external_id.0.0)?;
        let mut tx = cx.state.pool.begin().await?;
        let deleted = subscribers::delete(&mut tx, tenant_id, id.as_str())
            .await?
            .ok_or(ApiError::NotFound("subscriber"))?;
        audit::record(
            &mut *tx,
            audit::Entry {
                tenant_id: Some(tenant_id),
                actor: &format!("api_key:{}", cx.auth.0.key_id),
                action: "subscriber.delete",
                resource_type: "subscriber",
                resource_id: Some(deleted.id.to_string()),
                result: "success",
                request_id: Some(&cx.request_id.0),
                details: serde_json::json!({
                    "notifications_cancelled": deleted.cancelled,
                    "notifications_detached": deleted.detached,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(subscriber_id = %deleted.id, cancelled = deleted.cancelled, "subscriber erased");
        Ok(DeleteResponse::Deleted)
    }

    /// `PUT` for the subscriber whose external id is `bulk`, a path the
    /// router gives to the bulk call.
    #[oai(
        path = "/bulk",
        method = "put",
        operation_id = "subscribers.put",
        hidden
    )]
    async fn put_bulk_named(
        &self,
        cx: ServiceCtx<'_>,
        body: StrictJson<SubscriberInput>,
    ) -> Result<PutResponse, ApiError> {
        self.put(cx, Path(ExternalIdSegment(BULK.to_owned())), body)
            .await
    }

    /// `GET` for the subscriber whose external id is `bulk`.
    #[oai(
        path = "/bulk",
        method = "get",
        operation_id = "subscribers.get",
        hidden
    )]
    async fn get_bulk_named(&self, cx: ServiceCtx<'_>) -> Result<GetResponse, ApiError> {
        self.get(cx, Path(ExternalIdSegment(BULK.to_owned()))).await
    }

    /// `DELETE` for the subscriber whose external id is `bulk`.
    #[oai(
        path = "/bulk",
        method = "delete",
        operation_id = "subscribers.delete",
        hidden
    )]
    async fn delete_bulk_named(&self, cx: ServiceCtx<'_>) -> Result<DeleteResponse, ApiError> {
        self.delete(cx, Path(ExternalIdSegment(BULK.to_owned())))
            .await
    }

    /// Create or replace up to 1,000 subscribers in one call.
    ///
    /// All or nothing: when any item is invalid, every problem is named (as
    /// `subscribers[17].phone`) and nothing is written. Each external id may
    /// appear once. Each item replaces that subscriber's whole profile, as
    /// `PUT` does.
    #[oai(path = "/bulk", method = "post", operation_id = "subscribers.bulk")]
    async fn bulk(
        &self,
        cx: ServiceCtx<'_>,
        body: StrictJson<BulkRequest>,
    ) -> Result<BulkResponse, ApiError> {
        let rows = bulk(body.0)?;
        let done = subscribers::bulk_upsert(&cx.state.pool, cx.auth.0.tenant_id, &rows).await?;
        tracing::info!(
            created = done.created,
            updated = done.updated,
            "subscribers stored in bulk"
        );
        Ok(BulkResponse::Ok(Json(BulkResult {
            created: done.created,
            updated: done.updated,
        })))
    }

    /// A subscriber's notification preferences (the defaults when never set).
    #[oai(
        path = "/:external_id/preferences",
        method = "get",
        operation_id = "subscribers.preferences.get"
    )]
    async fn get_preferences(
        &self,
        cx: ServiceCtx<'_>,
        external_id: Path<ExternalIdSegment>,
    ) -> Result<PreferencesResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let id = path_id(&external_id.0.0)?;
        let subscriber = subscribers::find(&cx.state.pool, tenant_id, id.as_str())
            .await?
            .ok_or(ApiError::NotFound("subscriber"))?;
        let prefs = preferences::get(&cx.state.pool, tenant_id, subscriber).await?;
        Ok(PreferencesResponse::Ok(preferences_json(&prefs)?))
    }

    /// Replace a subscriber's notification preferences: the same document,
    /// parsed as strictly, as the user's own at
    /// `/api/v1/users/me/preferences`. Critical notifications are sent
    /// regardless.
    #[oai(
        path = "/:external_id/preferences",
        method = "put",
        operation_id = "subscribers.preferences.put"
    )]
    async fn put_preferences(
        &self,
        cx: ServiceCtx<'_>,
        external_id: Path<ExternalIdSegment>,
        body: Json<Value>,
    ) -> Result<PreferencesResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let id = path_id(&external_id.0.0)?;
        let prefs = Preferences::parse(body.0)
            .map_err(|reason| ApiError::invalid("preferences", reason))?;
        let subscriber = subscribers::find(&cx.state.pool, tenant_id, id.as_str())
            .await?
            .ok_or(ApiError::NotFound("subscriber"))?;
        match preferences::put(&cx.state.pool, tenant_id, subscriber, &prefs).await {
            // Deleted in between.
            Err(e)
                if db::violated_constraint(&e)
                    == Some("subscriber_preferences_subscriber_id_fkey") =>
            {
                return Err(ApiError::NotFound("subscriber"));
            }
            done => done?,
        }
        Ok(PreferencesResponse::Ok(preferences_json(&prefs)?))
    }
}
