//! `/api/v1/shipments`: an organisation's UPS shipments, kept current by the
//! `ups_poll` workers (see `worker::jobs::poll_ups`).
//!
//! Callers are the organisation's API key or one of its users' JWTs; another
//! organisation's shipment answers 404. `created_by` is the caller
//! (`user:<subject>` or `api_key:<id>`); `assigned_to` is a user's subject.
//! A tracking number that is no UPS format, or a 1Z number whose check digit
//! is wrong, answers 422 naming `tracking_number`.

use chrono::{DateTime, SubsecRound, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi, SecurityScheme,
    param::{Path, Query},
    payload::Json,
};
use serde::Deserialize;
use serde_json::Value;
use shared::{
    db::shipments::{self as db, Shipment, ShipmentEvent},
    domain::{ShipmentId, TenantId},
    jobs::PollUpsShipments,
    shipments::ShipmentStatus,
};

use crate::{
    AppState,
    auth::{ServiceKey, UserJwt},
    body::StrictJson,
    error::ApiError,
    extract::{Cursor, PageSize, PathId, page},
    routes::ApiTags,
    services::shipments::{self as service, check_text},
};

/// Longest reference and user reference.
/// A shipment can be refreshed once in this many seconds.
pub const REFRESH_EVERY_SECS: u64 = 30;

/// A caller of the organisation: its API key or a user's JWT.
#[derive(Debug, SecurityScheme)]
pub enum OrgCaller {
    /// A tenant API key.
    Key(ServiceKey),
    /// A user's JWT.
    User(UserJwt),
}

impl OrgCaller {
    fn tenant_id(&self) -> TenantId {
        match self {
            OrgCaller::Key(ServiceKey(owner)) => owner.tenant_id,
            OrgCaller::User(UserJwt(identity)) => identity.tenant_id,
        }
    }

    fn actor(&self) -> String {
        match self {
            OrgCaller::Key(ServiceKey(owner)) => format!("api_key:{}", owner.key_id),
            OrgCaller::User(UserJwt(identity)) => format!("user:{}", identity.subject),
        }
    }
}

/// The shipments API.
#[derive(Debug)]
pub struct ShipmentsApi;

/// A shipment to track.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CreateShipment {
    /// The UPS tracking number: `1Z` + 16 characters (check digit verified),
    /// `T` + 10 digits, 9 digits, or a Mail Innovations number.
    pub tracking_number: String,
    /// The carrier; only `ups`.
    #[serde(default)]
    pub carrier: Option<String>,
    /// The organisation's reference (order, kit, prescription), at most 255
    /// characters.
    #[serde(default)]
    pub reference: Option<String>,
    /// The user (JWT subject) to tell about it.
    #[serde(default)]
    pub assigned_to: Option<String>,
}

/// A shipment's replacement fields (the tracking number cannot change).
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct UpdateShipment {
    /// The organisation's reference; absent or null clears it.
    #[serde(default)]
    pub reference: Option<String>,
    /// The assigned user; absent or null clears it.
    #[serde(default)]
    pub assigned_to: Option<String>,
}

/// One carrier event.
#[derive(Debug, Object)]
pub struct EventView {
    /// When it happened (UPS's local scan time, read as UTC).
    pub occurred_at: DateTime<Utc>,
    /// Our status for it (`unknown` for types UPS gave no meaning).
    pub status: String,
    /// UPS's status type (`M`, `I`, `O`, `D`, `X`, `RS`, …).
    pub status_type: String,
    /// UPS's status code.
    pub status_code: String,
    /// UPS's description.
    pub description: String,
    /// City, state, country.
    pub location: String,
}

impl From<ShipmentEvent> for EventView {
    fn from(e: ShipmentEvent) -> Self {
        Self {
            occurred_at: e.occurred_at,
            status: e.status,
            status_type: e.status_type,
            status_code: e.status_code,
            description: e.description,
            location: e.location,
        }
    }
}

/// A shipment.
#[derive(Debug, Object)]
pub struct ShipmentView {
    /// Its id.
    pub id: String,
    /// `ups`.
    pub carrier: String,
    /// The tracking number, normalised.
    pub tracking_number: String,
    /// The organisation's reference.
    pub reference: Option<String>,
    /// `pending` (UPS has not answered yet), `label_created`, `in_transit`,
    /// `out_for_delivery`, `delivered`, `exception` or `returned`.
    pub status: String,
    /// Expected (or actual) delivery day.
    pub eta: Option<DateTime<Utc>>,
    /// The newest carrier event.
    pub last_event: Option<Value>,
    /// When UPS was last asked.
    pub last_polled_at: Option<DateTime<Utc>>,
    /// When it is next polled; none once delivered or returned.
    pub next_poll_at: Option<DateTime<Utc>>,
    /// Why the last poll failed, or what UPS said (unknown number).
    pub last_error: Option<String>,
    /// Who created it: `user:<subject>` or `api_key:<id>`.
    pub created_by: String,
    /// The assigned user's subject.
    pub assigned_to: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The event history, newest first (on `GET /{id}` only).
    #[oai(skip_serializing_if_is_none)]
    pub events: Option<Vec<EventView>>,
}

impl From<Shipment> for ShipmentView {
    fn from(s: Shipment) -> Self {
        Self {
            id: s.id.to_string(),
            carrier: s.carrier,
            tracking_number: s.tracking_number,
            reference: s.reference,
            status: s.status.as_str().to_owned(),
            eta: s.eta,
            last_event: s.last_event.map(|j| j.0),
            last_polled_at: s.last_polled_at,
            next_poll_at: s.next_poll_at,
            last_error: s.last_error,
            created_by: s.created_by,
            assigned_to: s.assigned_to,
            created_at: s.created_at,
            updated_at: s.updated_at,
            events: None,
        }
    }
}

/// A page of shipments.
#[derive(Debug, Object)]
pub struct ShipmentPage {
    /// Newest first.
    pub items: Vec<ShipmentView>,
    /// Pass as `cursor` for the next page; none on the last.
    pub next_cursor: Option<String>,
}

/// Answers to a creation.
#[derive(Debug, ApiResponse)]
pub enum CreateResponse {
    /// Created; polled shortly.
    #[oai(status = 201)]
    Created(Json<ShipmentView>, #[oai(header = "Location")] String),
}

/// Answers with one shipment.
#[derive(Debug, ApiResponse)]
pub enum ShipmentResponse {
    /// The shipment.
    #[oai(status = 200)]
    Ok(Json<ShipmentView>),
}

/// Answers with a page.
#[derive(Debug, ApiResponse)]
pub enum PageResponse {
    /// The page.
    #[oai(status = 200)]
    Ok(Json<ShipmentPage>),
}

/// Answers to a refresh.
#[derive(Debug, ApiResponse)]
pub enum RefreshResponse {
    /// A poll is queued; `GET` the shipment for its result.
    #[oai(status = 202)]
    Accepted(Json<ShipmentView>),
}

/// Answers to a delete.
#[derive(Debug, ApiResponse)]
pub enum DeleteResponse {
    /// Deleted, with its events.
    #[oai(status = 204)]
    Deleted,
}

#[OpenApi(prefix_path = "/api/v1/shipments", tag = "ApiTags::Shipments")]
impl ShipmentsApi {
    /// Track a UPS shipment. It is polled at once, then at an interval that
    /// follows its status, until it is delivered or returned.
    #[oai(path = "/", method = "post", operation_id = "shipments.create")]
    async fn create(
        &self,
        auth: OrgCaller,
        state: Data<&AppState>,
        body: StrictJson<CreateShipment>,
    ) -> Result<CreateResponse, ApiError> {
        let req = body.0;
        let new = service::NewTracking {
            tracking_number: req.tracking_number,
            carrier: req.carrier,
            reference: req.reference,
            assigned_to: req.assigned_to,
        };
        let created = service::create(state.0, auth.tenant_id(), &auth.actor(), new).await?;
        let location = format!("/api/v1/shipments/{}", created.id);
        Ok(CreateResponse::Created(Json(created.into()), location))
    }

    /// The organisation's shipments, newest first.
    #[oai(path = "/", method = "get", operation_id = "shipments.list")]
    async fn list(
        &self,
        auth: OrgCaller,
        state: Data<&AppState>,
        /// Only this status.
        status: Query<Option<String>>,
        /// From `next_cursor` of the previous page.
        cursor: Query<Option<Cursor<ShipmentId>>>,
        /// Shipments per page.
        limit: Query<PageSize>,
    ) -> Result<PageResponse, ApiError> {
        let status = match status.0.as_deref() {
            None => None,
            Some(s) => Some(ShipmentStatus::parse(s).ok_or_else(|| {
                let known: Vec<&str> = ShipmentStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::invalid("status", format!("must be one of {}", known.join(", ")))
            })?),
        };
        let before = cursor.0.map(Cursor::get).transpose()?;
        let items = db::list(
            &state.pool,
            auth.tenant_id(),
            status,
            before,
            limit.0.fetch(),
        )
        .await?;
        let (items, next_cursor) = page(items, limit.0, |s| s.id);
        Ok(PageResponse::Ok(Json(ShipmentPage {
            items: items.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// One shipment with its event history.
    #[oai(path = "/:id", method = "get", operation_id = "shipments.get")]
    async fn get(
        &self,
        auth: OrgCaller,
        state: Data<&AppState>,
        id: Path<PathId<ShipmentId>>,
    ) -> Result<ShipmentResponse, ApiError> {
        let id = id.0.get("shipment")?;
        let tenant = auth.tenant_id();
        let shipment = db::get(&state.pool, tenant, id)
            .await?
            .ok_or(ApiError::NotFound("shipment"))?;
        let events = db::events(&state.pool, tenant, id).await?;
        let mut view = ShipmentView::from(shipment);
        view.events = Some(events.into_iter().map(Into::into).collect());
        Ok(ShipmentResponse::Ok(Json(view)))
    }

    /// Replace a shipment's reference and assignee.
    #[oai(path = "/:id", method = "put", operation_id = "shipments.update")]
    async fn update(
        &self,
        auth: OrgCaller,
        state: Data<&AppState>,
        id: Path<PathId<ShipmentId>>,
        body: StrictJson<UpdateShipment>,
    ) -> Result<ShipmentResponse, ApiError> {
        let id = id.0.get("shipment")?;
        let req = body.0;
        let mut problems = Vec::new();
        let reference = check_text("reference", req.reference.as_deref(), &mut problems);
        let assigned_to = check_text("assigned_to", req.assigned_to.as_deref(), &mut problems);
        if !problems.is_empty() {
            return Err(ApiError::Unprocessable(problems));
        }
        let updated = db::update(
            &state.pool,
            auth.tenant_id(),
            id,
            reference.as_deref(),
            assigned_to.as_deref(),
        )
        .await?
        .ok_or(ApiError::NotFound("shipment"))?;
        Ok(ShipmentResponse::Ok(Json(updated.into())))
    }

    /// Stop tracking a shipment and forget its events.
    #[oai(path = "/:id", method = "delete", operation_id = "shipments.delete")]
    async fn delete(
        &self,
        auth: OrgCaller,
        state: Data<&AppState>,
        id: Path<PathId<ShipmentId>>,
    ) -> Result<DeleteResponse, ApiError> {
        let id = id.0.get("shipment")?;
        if db::delete(&state.pool, auth.tenant_id(), id).await? {
            Ok(DeleteResponse::Deleted)
        } else {
            Err(ApiError::NotFound("shipment"))
        }
    }

    /// Poll UPS for this shipment now. Once per 30 seconds per shipment;
    /// more often answers 429 with `Retry-After`.
    #[oai(
        path = "/:id/refresh",
        method = "post",
        operation_id = "shipments.refresh"
    )]
    async fn refresh(
        &self,
        auth: OrgCaller,
        state: Data<&AppState>,
        id: Path<PathId<ShipmentId>>,
    ) -> Result<RefreshResponse, ApiError> {
        let id = id.0.get("shipment")?;
        let tenant = auth.tenant_id();
        let shipment = db::get(&state.pool, tenant, id)
            .await?
            .ok_or(ApiError::NotFound("shipment"))?;
        let key = format!("{}:ups:refresh:{tenant}:{id}", state.queues.prefix());
        let mut conn = state.queues.connection();
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(REFRESH_EVERY_SECS)
            .query_async(&mut conn)
            .await
            .map_err(|e| ApiError::Unavailable(format!("redis: {e}")))?;
        if set.is_none() {
            let ttl: i64 = redis::cmd("TTL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap_or(REFRESH_EVERY_SECS as i64);
            return Err(ApiError::TooManyRequests(ttl.max(1) as u64));
        }
        // Postgres keeps microseconds: the claim must match the job's time.
        let at = Utc::now().trunc_subsecs(6);
        if !db::claim_one(&state.pool, tenant, id, at).await? {
            return Err(ApiError::NotFound("shipment"));
        }
        if let Err(error) = state
            .queues
            .push(PollUpsShipments {
                scheduled_for: at,
                tenant_id: Some(tenant),
                shipments: vec![id],
            })
            .await
        {
            // The claim's lease ends and the next sweep polls it.
            tracing::warn!(%error, "cannot push the refresh; the next sweep polls it");
        }
        Ok(RefreshResponse::Accepted(Json(shipment.into())))
    }
}
