//! Authentication, both as `Authorization: Bearer …`:
//!
//! * [`ServiceKey`]: machine callers with a tenant API key
//!   (`/api/v1/services/*`).
//! * [`UserJwt`]: end users and admins with a JWT (`/api/v1/users/me/*`), see
//!   [`crate::identity`].
//!
//! Any failure gets 401; neither keys nor tokens are ever logged.

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};
use secrecy::SecretString;
use shared::db::api_keys::{self, KeyOwner};

use crate::{AppState, error::ApiError, identity::Identity};

/// A caller authenticated by a tenant API key.
#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", checker = "check_api_key")]
pub struct ServiceKey(pub KeyOwner);

/// Longest token worth looking up; real keys are 44 characters.
const MAX_TOKEN_LEN: usize = 128;

async fn check_api_key(req: &Request, bearer: Bearer) -> poem::Result<KeyOwner> {
    let state = req
        .data::<AppState>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("state missing")))?;
    let token = bearer.token;
    if token.len() > MAX_TOKEN_LEN || !token.starts_with(api_keys::KEY_PREFIX) {
        return Err(ApiError::Unauthorized.into());
    }
    match api_keys::authenticate(&state.pool, &SecretString::from(token)).await {
        Ok(Some(owner)) => {
            tracing::Span::current().record("tenant_id", tracing::field::display(owner.tenant_id));
            Ok(owner)
        }
        Ok(None) => Err(ApiError::Unauthorized.into()),
        Err(e) => Err(ApiError::from(e).into()),
    }
}

/// A caller authenticated by a bearer JWT.
#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_jwt")]
pub struct UserJwt(pub Identity);

/// Longest token worth parsing.
const MAX_JWT_LEN: usize = 8 * 1024;

async fn check_jwt(req: &Request, bearer: Bearer) -> poem::Result<Identity> {
    let state = req
        .data::<AppState>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("state missing")))?;
    if bearer.token.len() > MAX_JWT_LEN {
        tracing::info!(reason = "oversized token", "token refused");
        return Err(ApiError::Unauthorized.into());
    }
    match state.verifier.verify(&bearer.token).await {
        Ok(identity) => {
            tracing::Span::current()
                .record("tenant_id", tracing::field::display(identity.tenant_id));
            Ok(identity)
        }
        Err(reason) => {
            tracing::info!(%reason, "token refused");
            Err(ApiError::Unauthorized.into())
        }
    }
}
