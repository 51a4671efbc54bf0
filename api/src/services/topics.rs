//! Topics: named lists of an organisation's subscribers that sends and
//! workflow triggers fan out to.

use shared::{
    db::topics::{self, Topic},
    domain::{TenantId, key_ok},
};

use crate::{AppState, error::ApiError};

/// Topic `key` of `tenant_id`, or 404 (a malformed key names no topic).
pub async fn find(state: &AppState, tenant_id: TenantId, key: &str) -> Result<Topic, ApiError> {
    if !key_ok(key) {
        return Err(ApiError::NotFound("topic"));
    }
    topics::get(&state.pool, tenant_id, key)
        .await?
        .ok_or(ApiError::NotFound("topic"))
}
