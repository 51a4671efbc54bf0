//! Topics under `/api/v1/services/topics`, and sends to a topic or to the
//! whole organisation under `/api/v1/services/notifications`.
//!
//! A topic is a named group of the organisation's subscribers, addressed by
//! a `key` unique in the organisation. Members are added and removed by
//! their external ids, up to 10,000 a call; ids with no subscriber are
//! listed in the answer and change nothing.
//!
//! `send-topic` and `send-organization` are batches whose recipients the
//! platform reads itself: the batch is created closed and its chunks are cut
//! from the audience in one statement in the request's transaction (see
//! [`shared::db::topics::cut_chunks`]). The batch workers then expand the
//! chunks exactly once each, with every member's preferences, and the
//! batch's status URL follows it like any batch. Another organisation's
//! topic answers 404.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use shared::{
    db::topics::{self, MAX_MEMBERS_PER_CALL, Topic},
    domain::{ExternalId, Problems, TenantId, key_ok, one_line_ok},
};

use crate::{
    AppState,
    body::StrictJson,
    error::ApiError,
    extract::ServiceCtx,
    extract::{Cursor, PageSize, page},
    routes::ApiTags,
    services::topics::find,
};

mod sends;

pub use sends::{
    AudienceAccepted, AudienceResponse, OrganizationSendRequest, TopicSendRequest, TopicSendsApi,
};

/// The topic endpoints.
#[derive(Debug)]
pub struct TopicsApi;

/// A new topic.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// Your key for it, unique in the organisation: 1 to 100 lower-case
    /// letters, digits, `.`, `_` or `-`, starting with a letter or digit
    /// (e.g. `ward-3.night`).
    pub key: String,
    /// Its display name: one line, 1 to 200 characters.
    pub name: String,
    /// What it is for: at most 2,000 characters.
    pub description: Option<String>,
}

/// A topic's new name and description (the key stays).
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct UpdateTopic {
    /// Its display name: one line, 1 to 200 characters.
    pub name: String,
    /// What it is for: at most 2,000 characters; left out or `null` erases it.
    pub description: Option<String>,
}

/// A topic.
#[derive(Debug, Clone, Object)]
pub struct TopicView {
    /// Its key, unique in the organisation.
    pub key: String,
    /// Its display name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// How many subscribers are members now.
    pub members: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its name or description last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Topic> for TopicView {
    fn from(t: Topic) -> Self {
        Self {
            key: t.key,
            name: t.name,
            description: t.description,
            members: t.members,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// A page of topics.
#[derive(Debug, Clone, Object)]
pub struct TopicPage {
    /// The topics, by key.
    pub items: Vec<TopicView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Subscribers to add to or remove from a topic.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct MembersRequest {
    /// 1 to 10,000 external ids of your subscribers, each once.
    #[oai(validator(min_items = 1, max_items = 10000))]
    pub subscribers: Vec<String>,
}

/// What a membership call changed.
#[derive(Debug, Clone, Object)]
pub struct MembersChanged {
    /// Subscribers added (or removed) by this call.
    pub changed: u64,
    /// Subscribers named that were already members (adding) or were not
    /// members (removing).
    pub unchanged: u64,
    /// External ids with no subscriber in the organisation, in the order
    /// given: nothing was done for them (create them with
    /// `PUT /api/v1/services/subscribers/{id}` first).
    pub unknown: Vec<String>,
    /// Members now.
    pub members: i64,
}

/// One member of a topic.
#[derive(Debug, Clone, Object)]
pub struct MemberView {
    /// The subscriber's external id.
    pub subscriber_id: String,
    /// When they were added to the topic.
    pub added_at: DateTime<Utc>,
}

/// A page of members.
#[derive(Debug, Clone, Object)]
pub struct MemberPage {
    /// The members, in a stable order.
    pub items: Vec<MemberView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Answers with a topic.
#[derive(Debug, ApiResponse)]
pub enum TopicResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<TopicView>, #[oai(header = "Location")] String),
    /// The topic.
    #[oai(status = 200)]
    Ok(Json<TopicView>),
}

/// Answers with a page of topics.
#[derive(Debug, ApiResponse)]
pub enum TopicPageResponse {
    /// The page.
    #[oai(status = 200)]
    Ok(Json<TopicPage>),
}

/// Answers to a delete.
#[derive(Debug, ApiResponse)]
pub enum TopicDeletedResponse {
    /// Deleted, with its memberships.
    #[oai(status = 204)]
    Deleted,
}

/// Answers to a membership change.
#[derive(Debug, ApiResponse)]
pub enum MembersChangedResponse {
    /// Done; unknown external ids are listed.
    #[oai(status = 200)]
    Ok(Json<MembersChanged>),
}

/// Answers with a page of members.
#[derive(Debug, ApiResponse)]
pub enum MemberPageResponse {
    /// The page.
    #[oai(status = 200)]
    Ok(Json<MemberPage>),
}

fn check_text(p: &mut Problems, name: &str, description: Option<&str>) {
    if let Some(d) = description
        && (d.trim().is_empty()
            || d.chars().count() > 2_000
            || d.chars().any(|c| c.is_control() && c != '\n'))
    {
        p.add(name, "must be 1 to 2,000 characters");
    }
}

/// The external ids of a membership call, checked: each well-formed and
/// named once.
fn member_ids(req: &MembersRequest) -> Result<Vec<String>, ApiError> {
    let n = req.subscribers.len();
    if n == 0 || n > MAX_MEMBERS_PER_CALL {
        return Err(ApiError::invalid(
            "subscribers",
            format!("must hold 1 to {MAX_MEMBERS_PER_CALL} external ids; split larger lists"),
        ));
    }
    let mut p = Problems::default();
    let mut seen = std::collections::HashMap::with_capacity(n);
    for (i, raw) in req.subscribers.iter().enumerate() {
        let name = format!("subscribers[{i}]");
        if let Err(e) = ExternalId::parse(raw) {
            p.add(name, e.0);
        } else if let Some(first) = seen.insert(raw.as_str(), i) {
            seen.insert(raw.as_str(), first);
            p.add(name, format!("repeats subscribers[{first}]"));
        }
        if p.len() >= 100 {
            break;
        }
    }
    p.into_result(()).map_err(ApiError::fields)?;
    Ok(req.subscribers.clone())
}

#[OpenApi(prefix_path = "/api/v1/services/topics", tag = "ApiTags::Subscribers")]
impl TopicsApi {
    /// Create a topic. A key already used in the organisation answers 409.
    #[oai(path = "/", method = "post", operation_id = "topics.create")]
    async fn create(
        &self,
        cx: ServiceCtx<'_>,
        body: StrictJson<CreateTopic>,
    ) -> Result<TopicResponse, ApiError> {
        let b = body.0;
        let mut p = Problems::default();
        if !key_ok(&b.key) {
            p.add("key", "must be 1 to 100 lower-case letters, digits, `.`, `_` or `-`, starting with a letter or digit");
        }
        if !one_line_ok(&b.name, 200) {
            p.add("name", "must be 1 to 200 characters on one line");
        }
        check_text(&mut p, "description", b.description.as_deref());
        p.into_result(()).map_err(ApiError::fields)?;
        let created = topics::create(
            &cx.state.pool,
            cx.auth.0.tenant_id,
            &b.key,
            &b.name,
            b.description.as_deref(),
        )
        .await;
        let topic = match created {
            Err(e) if shared::db::violated_constraint(&e) == Some(topics::KEY_CONSTRAINT) => {
                return Err(ApiError::Conflict(
                    "a topic with this key already exists".into(),
                ));
            }
            other => other?,
        };
        let location = format!("/api/v1/services/topics/{}", topic.key);
        Ok(TopicResponse::Created(Json(topic.into()), location))
    }

    /// List the organisation's topics by key, by cursor.
    #[oai(path = "/", method = "get", operation_id = "topics.list")]
    async fn list(
        &self,
        cx: ServiceCtx<'_>,
        /// From `next_cursor` of the previous page.
        cursor: Query<Option<Cursor<String>>>,
        /// Topics per page.
        limit: Query<PageSize>,
    ) -> Result<TopicPageResponse, ApiError> {
        let after = cursor.0.map(Cursor::get).transpose()?;
        let items = topics::list(
            &cx.state.pool,
            cx.auth.0.tenant_id,
            after.as_deref(),
            limit.0.fetch(),
        )
        .await?;
        let (items, next_cursor) = page(items, limit.0, |t| t.key.clone());
        Ok(TopicPageResponse::Ok(Json(TopicPage {
            items: items.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// Read a topic.
    #[oai(path = "/:key", method = "get", operation_id = "topics.get")]
    async fn get(&self, cx: ServiceCtx<'_>, key: Path<String>) -> Result<TopicResponse, ApiError> {
        let topic = find(cx.state, cx.auth.0.tenant_id, &key.0).await?;
        Ok(TopicResponse::Ok(Json(topic.into())))
    }

    /// Replace a topic's name and description.
    #[oai(path = "/:key", method = "put", operation_id = "topics.update")]
    async fn update(
        &self,
        cx: ServiceCtx<'_>,
        key: Path<String>,
        body: StrictJson<UpdateTopic>,
    ) -> Result<TopicResponse, ApiError> {
        let b = body.0;
        if !key_ok(&key.0) {
            return Err(ApiError::NotFound("topic"));
        }
        let mut p = Problems::default();
        if !one_line_ok(&b.name, 200) {
            p.add("name", "must be 1 to 200 characters on one line");
        }
        check_text(&mut p, "description", b.description.as_deref());
        p.into_result(()).map_err(ApiError::fields)?;
        let topic = topics::update(
            &cx.state.pool,
            cx.auth.0.tenant_id,
            &key.0,
            &b.name,
            b.description.as_deref(),
        )
        .await?
        .ok_or(ApiError::NotFound("topic"))?;
        Ok(TopicResponse::Ok(Json(topic.into())))
    }

    /// Delete a topic and its memberships (the subscribers stay). Sends
    /// already accepted still reach the members they were cut for.
    #[oai(path = "/:key", method = "delete", operation_id = "topics.delete")]
    async fn delete(
        &self,
        cx: ServiceCtx<'_>,
        key: Path<String>,
    ) -> Result<TopicDeletedResponse, ApiError> {
        if !key_ok(&key.0) || !topics::delete(&cx.state.pool, cx.auth.0.tenant_id, &key.0).await? {
            return Err(ApiError::NotFound("topic"));
        }
        Ok(TopicDeletedResponse::Deleted)
    }

    /// Add up to 10,000 subscribers (by external id) to a topic. Members
    /// already in it stay; external ids with no subscriber are listed in
    /// `unknown` and change nothing. A repeated id answers 400.
    #[oai(
        path = "/:key/members",
        method = "post",
        operation_id = "topics.add_members"
    )]
    async fn add_members(
        &self,
        cx: ServiceCtx<'_>,
        key: Path<String>,
        body: StrictJson<MembersRequest>,
    ) -> Result<MembersChangedResponse, ApiError> {
        self.change(cx.auth.0.tenant_id, cx.state, &key.0, &body.0, true)
            .await
    }

    /// Remove up to 10,000 subscribers (by external id) from a topic. Ids
    /// that are not members are counted in `unchanged`; ids with no
    /// subscriber are listed in `unknown`.
    #[oai(
        path = "/:key/members/remove",
        method = "post",
        operation_id = "topics.remove_members"
    )]
    async fn remove_members(
        &self,
        cx: ServiceCtx<'_>,
        key: Path<String>,
        body: StrictJson<MembersRequest>,
    ) -> Result<MembersChangedResponse, ApiError> {
        self.change(cx.auth.0.tenant_id, cx.state, &key.0, &body.0, false)
            .await
    }

    /// List a topic's members, by cursor.
    #[oai(
        path = "/:key/members",
        method = "get",
        operation_id = "topics.list_members"
    )]
    async fn list_members(
        &self,
        cx: ServiceCtx<'_>,
        key: Path<String>,
        /// From `next_cursor` of the previous page.
        cursor: Query<Option<Cursor<uuid::Uuid>>>,
        /// Members per page.
        limit: Query<PageSize>,
    ) -> Result<MemberPageResponse, ApiError> {
        let after = cursor.0.map(Cursor::get).transpose()?;
        let tenant_id = cx.auth.0.tenant_id;
        let topic = find(cx.state, tenant_id, &key.0).await?;
        let items =
            topics::members(&cx.state.pool, tenant_id, topic.id, after, limit.0.fetch()).await?;
        let (items, next_cursor) = page(items, limit.0, |m| m.subscriber_id);
        Ok(MemberPageResponse::Ok(Json(MemberPage {
            items: items
                .into_iter()
                .map(|m| MemberView {
                    subscriber_id: m.external_id,
                    added_at: m.added_at,
                })
                .collect(),
            next_cursor,
        })))
    }
}

impl TopicsApi {
    async fn change(
        &self,
        tenant_id: TenantId,
        state: &AppState,
        key: &str,
        req: &MembersRequest,
        add: bool,
    ) -> Result<MembersChangedResponse, ApiError> {
        let ids = member_ids(req)?;
        let topic = find(state, tenant_id, key).await?;
        let mut tx = state.pool.begin().await?;
        let changed = if add {
            topics::add_members(&mut tx, tenant_id, topic.id, &ids).await?
        } else {
            topics::remove_members(&mut tx, tenant_id, topic.id, &ids).await?
        };
        tx.commit().await?;
        let members = topics::get(&state.pool, tenant_id, key)
            .await?
            .map_or(0, |t| t.members);
        Ok(MembersChangedResponse::Ok(Json(MembersChanged {
            changed: changed.changed,
            unchanged: changed.unchanged,
            unknown: changed.unknown,
            members,
        })))
    }
}
