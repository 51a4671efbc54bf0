//! Reference values platform admins edit: notification categories (added,
//! relabelled; at most [`lookups::MAX_VALUES`]) and organisation types'
//! labels. The route in [`crate::routes::lookups`] checks the caller and
//! the fields and shapes the answer.

use serde_json::json;
use shared::{
    db::lookups::{self as store, Change, Value},
    lookups::{self, LookupKind},
};

use crate::{access::InRequest, error::ApiError};

/// Writes value `code` of `kind` as `at`'s principal: added when new (for
/// a kind that takes new values, while it has fewer than
/// [`lookups::MAX_VALUES`]; 409 past that), changed otherwise; 404 for a
/// new code of a fixed kind. Audited as `lookup.create` or
/// `lookup.update`, refusals recorded. The value, and whether it is new.
pub async fn put(
    at: InRequest<'_>,
    kind: LookupKind,
    code: &str,
    change: &Change<'_>,
) -> Result<(Value, bool), ApiError> {
    let resource = format!("{}/{code}", kind.as_str());
    let mut tx = at.state().pool.begin().await?;
    if kind.open() && store::count(&mut *tx, kind).await? >= lookups::MAX_VALUES {
        let exists = store::list(&mut *tx, kind)
            .await?
            .iter()
            .any(|v| v.code == code);
        if !exists {
            let full = Err(ApiError::Conflict(format!(
                "{} already has 200 values",
                kind.as_str()
            )));
            return at
                .acting("lookup.create", "lookup")
                .refused(Some(&resource), full)
                .await;
        }
    }
    let written = store::put(&mut *tx, kind, code, change, kind.open())
        .await?
        .ok_or(ApiError::NotFound("lookup value"));
    let (value, created) = at
        .acting("lookup.update", "lookup")
        .refused(Some(&resource), written)
        .await?;
    let action = if created {
        "lookup.create"
    } else {
        "lookup.update"
    };
    let details = json!({"kind": kind.as_str(), "code": value.code, "label": value.label,
                         "description": value.description, "position": value.position});
    at.acting(action, "lookup")
        .audit(&mut *tx, None, &resource, details)
        .await?;
    tx.commit().await?;
    Ok((value, created))
}
