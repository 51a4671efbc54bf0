//! What every authenticated handler starts from, taken as one argument:
//! the caller, the application state and the request's id.

use poem::{FromRequest, Request, RequestBody, web::Data};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, registry::Registry};
use shared::domain::{Channel, TenantId};

use crate::{
    AppState,
    access::{Acting, Principal},
    auth::{Admin, ServiceKey, UserJwt},
    error::ApiError,
    limits::QuotaTicket,
    middleware::RequestId,
};

/// A request of a caller authenticated as `A` (`cx: AdminCtx<'_>`,
/// `cx: ServiceCtx<'_>`, `cx: UserCtx<'_>`): the document describes the
/// operation's security exactly as for an `A` argument.
#[derive(Debug)]
pub struct Ctx<'a, A> {
    /// The caller, its permission for the operation already checked.
    pub auth: A,
    /// The application state.
    pub state: &'a AppState,
    /// The request's id.
    pub request_id: &'a RequestId,
}

/// An administrative request ([`Admin`]): a tenant API key or a user's JWT.
pub type AdminCtx<'a> = Ctx<'a, Admin>;

/// A request with a tenant API key ([`ServiceKey`]).
pub type ServiceCtx<'a> = Ctx<'a, ServiceKey>;

/// A request with a user's JWT ([`UserJwt`]).
pub type UserCtx<'a> = Ctx<'a, UserJwt>;

impl<A> Ctx<'_, A> {
    /// Takes `counts` from organisation `tenant`'s send quotas for this
    /// request, unless it repeats one accepted before
    /// ([`crate::limits::Limiter::take_quota_unless_replayed`]).
    pub async fn take_quota(
        &self,
        tenant: TenantId,
        counts: &[(Channel, u64)],
        replayed: impl Future<Output = Result<bool, sqlx::Error>>,
    ) -> Result<QuotaTicket, ApiError> {
        self.state
            .limits
            .take_quota_unless_replayed(tenant, &self.request_id.0, counts, replayed)
            .await
    }
}

impl<'a> AdminCtx<'a> {
    /// The caller as a [`Principal`]: its organisation, role and reach.
    pub async fn principal(&self) -> Result<Principal, ApiError> {
        Principal::resolve(self.state, &self.auth).await
    }

    /// Records a change the caller made to `resource_type` `id` in the
    /// audit log, through `db` (the change's own transaction where there is
    /// one), as [`crate::auth::AdminCaller::audit`] does.
    pub async fn audit(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        action: &str,
        resource_type: &str,
        id: impl std::fmt::Display,
        details: serde_json::Value,
    ) -> Result<(), ApiError> {
        self.auth
            .caller()
            .audit(db, self.request_id, action, resource_type, id, details)
            .await
    }

    /// `p` (this request's principal) taking `action` on resources of
    /// `resource_type`: what its audit rows and recorded refusals name.
    pub fn acting<'p>(
        &'p self,
        p: &'p Principal,
        action: &'p str,
        resource_type: &'p str,
    ) -> Acting<'p> {
        p.at(self.state, self.request_id)
            .acting(action, resource_type)
    }
}

/// Implements poem-openapi's extractor for `Ctx<'a, $auth>`: described and
/// authenticated as `$auth`, then the state and the request id.
macro_rules! ctx_extractor {
    ($($auth:ty),*) => {$(
        impl<'a> ApiExtractor<'a> for Ctx<'a, $auth> {
            const TYPES: &'static [ApiExtractorType] = <$auth as ApiExtractor<'a>>::TYPES;

            type ParamType = <$auth as ApiExtractor<'a>>::ParamType;
            type ParamRawType = <$auth as ApiExtractor<'a>>::ParamRawType;

            fn register(registry: &mut Registry) {
                <$auth as ApiExtractor<'a>>::register(registry);
            }

            fn security_schemes() -> Vec<&'static str> {
                <$auth as ApiExtractor<'a>>::security_schemes()
            }

            fn has_security_fallback() -> bool {
                <$auth as ApiExtractor<'a>>::has_security_fallback()
            }

            async fn from_request(
                request: &'a Request,
                body: &mut RequestBody,
                param_opts: ExtractParamOptions<Self::ParamType>,
            ) -> poem::Result<Self> {
                let auth =
                    <$auth as ApiExtractor<'a>>::from_request(request, body, param_opts).await?;
                let Data(state) =
                    <Data<&'a AppState> as FromRequest<'a>>::from_request(request, body).await?;
                let Data(request_id) =
                    <Data<&'a RequestId> as FromRequest<'a>>::from_request(request, body).await?;
                Ok(Self {
                    auth,
                    state,
                    request_id,
                })
            }
        }
    )*};
}

ctx_extractor!(Admin, ServiceKey, UserJwt);
