//! `/api/v1/lookups`: the lists of values the platform uses
//! ([`shared::lookups`]), readable by every authenticated caller.
//!
//! Platform admins add, relabel and remove notification categories and
//! relabel organisation types; every change is audited, refusals too.
//! BAA statuses, shipment statuses, error classes and channels come from
//! the code's own enums and cannot be changed.

use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, param::Path, payload::Json};
use serde_json::json;
use shared::{
    db::lookups as store,
    lookups::{self, LookupKind},
};

use crate::{
    AppState, body::StrictJson, error::ApiError, extract::AdminCtx, routes::ApiTags,
    services::lookups as service,
};

/// The lookup endpoints.
#[derive(Debug)]
pub struct LookupsApi;

/// A list of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum LookupKindParam {
    /// Notification categories (platform admins add, relabel and remove).
    NotificationCategory,
    /// Organisation types (platform admins relabel).
    OrganizationType,
    /// Where an organisation's BAA stands (read-only).
    BaaStatus,
    /// Shipment statuses (read-only).
    ShipmentStatus,
    /// Error classes (read-only).
    ErrorClass,
    /// Delivery channels (read-only).
    Channel,
}

/// A list platform admins edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum EditableKindParam {
    /// Notification categories: added, relabelled, removed.
    NotificationCategory,
    /// Organisation types: relabelled.
    OrganizationType,
}

impl From<EditableKindParam> for LookupKind {
    fn from(k: EditableKindParam) -> Self {
        match k {
            EditableKindParam::NotificationCategory => LookupKind::NotificationCategory,
            EditableKindParam::OrganizationType => LookupKind::OrganizationType,
        }
    }
}

/// A list whose values can be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum OpenKindParam {
    /// Notification categories.
    NotificationCategory,
}

impl From<OpenKindParam> for LookupKind {
    fn from(k: OpenKindParam) -> Self {
        match k {
            OpenKindParam::NotificationCategory => LookupKind::NotificationCategory,
        }
    }
}

impl From<LookupKindParam> for LookupKind {
    fn from(k: LookupKindParam) -> Self {
        match k {
            LookupKindParam::NotificationCategory => LookupKind::NotificationCategory,
            LookupKindParam::OrganizationType => LookupKind::OrganizationType,
            LookupKindParam::BaaStatus => LookupKind::BaaStatus,
            LookupKindParam::ShipmentStatus => LookupKind::ShipmentStatus,
            LookupKindParam::ErrorClass => LookupKind::ErrorClass,
            LookupKindParam::Channel => LookupKind::Channel,
        }
    }
}

/// One value.
#[derive(Debug, Object)]
pub struct LookupValueView {
    /// What the platform stores and accepts.
    pub code: String,
    /// A label for people.
    pub label: String,
    /// What it means.
    pub description: Option<String>,
    /// Where it is shown in its list.
    pub position: i32,
    /// Last changed (absent for read-only values).
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<store::Value> for LookupValueView {
    fn from(v: store::Value) -> Self {
        Self {
            code: v.code,
            label: v.label,
            description: v.description,
            position: v.position,
            updated_at: Some(v.updated_at),
        }
    }
}

/// One list.
#[derive(Debug, Object)]
pub struct LookupListView {
    /// Its kind.
    pub kind: String,
    /// Whether platform admins may change it.
    pub editable: bool,
    /// Its values, in order.
    pub values: Vec<LookupValueView>,
}

/// Every list.
#[derive(Debug, Object)]
pub struct LookupLists {
    /// In a fixed order.
    pub items: Vec<LookupListView>,
}

/// A value's label, description and position.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct LookupValueBody {
    /// A label for people (1 to 100 characters, not only spaces, no
    /// control characters; trimmed).
    #[oai(validator(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
    ))]
    pub label: String,
    /// What it means (at most 500 characters; line breaks, but no other
    /// control characters; trimmed).
    #[oai(validator(max_length = 500, pattern = r"^[^\x00-\x09\x0b-\x1f\x7f]*$"))]
    pub description: Option<String>,
    /// Where it is shown (0 to 10000; kept when absent, 0 for a new value).
    #[oai(validator(minimum(value = "0"), maximum(value = "10000")))]
    pub position: Option<i32>,
}

/// Answers with every list.
#[derive(Debug, ApiResponse)]
pub enum LookupListsResponse {
    /// The lists.
    #[oai(status = 200)]
    Ok(Json<LookupLists>),
}

/// Answers with one list.
#[derive(Debug, ApiResponse)]
pub enum LookupListResponse {
    /// The list.
    #[oai(status = 200)]
    Ok(Json<LookupListView>),
}

/// Answers with a value.
#[derive(Debug, ApiResponse)]
pub enum LookupValueResponse {
    /// Changed.
    #[oai(status = 200)]
    Ok(Json<LookupValueView>),
    /// Added.
    #[oai(status = 201)]
    Created(Json<LookupValueView>),
}

/// Answers to a removal.
#[derive(Debug, ApiResponse)]
pub enum LookupDeletedResponse {
    /// Removed.
    #[oai(status = 204)]
    Deleted,
}

async fn list_of(state: &AppState, kind: LookupKind) -> Result<LookupListView, ApiError> {
    let values = if kind.editable() {
        store::list(&state.pool, kind)
            .await?
            .into_iter()
            .map(Into::into)
            .collect()
    } else {
        kind.fixed_codes()
            .into_iter()
            .enumerate()
            .map(|(i, code)| LookupValueView {
                code: code.to_owned(),
                label: lookups::label_of(code),
                description: None,
                position: i as i32,
                updated_at: None,
            })
            .collect()
    };
    Ok(LookupListView {
        kind: kind.as_str().to_owned(),
        editable: kind.editable(),
        values,
    })
}

/// A C0 control character or DEL (what the document's patterns refuse).
fn control(c: char) -> bool {
    c < ' ' || c == '\x7f'
}

/// The label and description of a body, checked as the document states
/// (lengths before trimming), then trimmed.
fn checked(body: &LookupValueBody) -> Result<(String, Option<String>), ApiError> {
    let label = body.label.trim();
    if label.is_empty() || body.label.chars().count() > lookups::MAX_LABEL {
        return Err(ApiError::invalid(
            "label",
            "must be 1 to 100 characters, not only spaces",
        ));
    }
    if body.label.chars().any(control) {
        return Err(ApiError::invalid(
            "label",
            "must not hold control characters",
        ));
    }
    if let Some(d) = &body.description {
        if d.chars().count() > lookups::MAX_DESCRIPTION {
            return Err(ApiError::invalid(
                "description",
                "must be at most 500 characters",
            ));
        }
        if d.chars().any(|c| control(c) && c != '\n') {
            return Err(ApiError::invalid(
                "description",
                "must not hold control characters other than line breaks",
            ));
        }
    }
    if body.position.is_some_and(|p| !(0..=10_000).contains(&p)) {
        return Err(ApiError::invalid("position", "must be 0 to 10000"));
    }
    let description = body
        .description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    Ok((label.to_owned(), description))
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Admin")]
impl LookupsApi {
    /// Every list of values (any authenticated caller): notification
    /// categories, organisation types, BAA statuses, shipment statuses,
    /// error classes and channels.
    #[oai(path = "/lookups", method = "get", operation_id = "lookups.list")]
    async fn list(&self, cx: AdminCtx<'_>) -> Result<LookupListsResponse, ApiError> {
        cx.principal().await?;
        let mut items = Vec::new();
        for kind in LookupKind::ALL {
            items.push(list_of(cx.state, *kind).await?);
        }
        Ok(LookupListsResponse::Ok(Json(LookupLists { items })))
    }

    /// One list of values (any authenticated caller).
    #[oai(path = "/lookups/:kind", method = "get", operation_id = "lookups.get")]
    async fn get(
        &self,
        cx: AdminCtx<'_>,
        kind: Path<LookupKindParam>,
    ) -> Result<LookupListResponse, ApiError> {
        cx.principal().await?;
        Ok(LookupListResponse::Ok(Json(
            list_of(cx.state, kind.0.into()).await?,
        )))
    }

    /// Add or change a value (platform admins): a notification category
    /// (added when new; at most 200), or an organisation type's label
    /// (its code must exist). The other kinds are read-only.
    #[oai(
        path = "/lookups/:kind/:code",
        method = "put",
        operation_id = "lookups.put"
    )]
    async fn put(
        &self,
        cx: AdminCtx<'_>,
        kind: Path<EditableKindParam>,
        #[oai(validator(pattern = "^[a-z][a-z0-9_]{0,63}$"))] code: Path<String>,
        body: StrictJson<LookupValueBody>,
    ) -> Result<LookupValueResponse, ApiError> {
        let kind: LookupKind = kind.0.into();
        let p = cx.principal().await?;
        let resource = format!("{}/{}", kind.as_str(), code.0);
        let allowed = p.require_platform();
        cx.acting(&p, "lookup.update", "lookup")
            .refused(Some(&resource), allowed)
            .await?;
        if !lookups::valid_code(&code.0) {
            return Err(ApiError::invalid(
                "code",
                "must be a lower-case letter, then lower-case letters, digits and _ (at most 64)",
            ));
        }
        let (label, description) = checked(&body.0)?;
        let change = store::Change {
            label: &label,
            description: description.as_deref(),
            position: body.0.position,
        };
        let at = p.at(cx.state, cx.request_id);
        let (value, created) = service::put(at, kind, &code.0, &change).await?;
        Ok(if created {
            LookupValueResponse::Created(Json(value.into()))
        } else {
            LookupValueResponse::Ok(Json(value.into()))
        })
    }

    /// Remove a notification category (platform admins); the other kinds'
    /// values are fixed.
    #[oai(
        path = "/lookups/:kind/:code",
        method = "delete",
        operation_id = "lookups.delete"
    )]
    async fn delete(
        &self,
        cx: AdminCtx<'_>,
        kind: Path<OpenKindParam>,
        #[oai(validator(pattern = "^[a-z][a-z0-9_]{0,63}$"))] code: Path<String>,
    ) -> Result<LookupDeletedResponse, ApiError> {
        let kind: LookupKind = kind.0.into();
        let p = cx.principal().await?;
        let act = cx.acting(&p, "lookup.delete", "lookup");
        let resource = format!("{}/{}", kind.as_str(), code.0);
        let allowed = p.require_platform();
        act.refused(Some(&resource), allowed).await?;
        let mut tx = cx.state.pool.begin().await?;
        let gone = if store::delete(&mut *tx, kind, &code.0).await? {
            Ok(())
        } else {
            Err(ApiError::NotFound("lookup value"))
        };
        act.refused(Some(&resource), gone).await?;
        act.audit(
            &mut *tx,
            None,
            &resource,
            json!({"kind": kind.as_str(), "code": code.0}),
        )
        .await?;
        tx.commit().await?;
        Ok(LookupDeletedResponse::Deleted)
    }
}
