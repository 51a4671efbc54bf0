//! Shipments: the rules a tracked shipment's fields follow, and starting
//! to track one. The routes in [`crate::routes::shipments`] parse requests
//! and shape answers.

use shared::{
    db::shipments::{self as db, NewShipment, Shipment},
    domain::{ShipmentId, TenantId},
    shipments::TrackingNumber,
};

use crate::{
    AppState,
    error::{ApiError, InvalidParam},
};

/// Longest reference or assignee.
const MAX_REFERENCE: usize = 255;

/// A shipment to track, as sent.
#[derive(Debug)]
pub struct NewTracking {
    /// A UPS tracking number.
    pub tracking_number: String,
    /// The carrier (`ups` only).
    pub carrier: Option<String>,
    /// The organisation's reference.
    pub reference: Option<String>,
    /// The user's subject it is assigned to.
    pub assigned_to: Option<String>,
}

/// An optional text field `name`, trimmed (blank is none): at most
/// [`MAX_REFERENCE`] characters without control characters, else a problem
/// is added to `problems`.
pub fn check_text(
    name: &str,
    value: Option<&str>,
    problems: &mut Vec<InvalidParam>,
) -> Option<String> {
    let v = value.map(str::trim).filter(|v| !v.is_empty())?;
    if v.chars().count() > MAX_REFERENCE || v.chars().any(char::is_control) {
        problems.push(InvalidParam {
            name: name.to_owned(),
            reason: format!(
                "must be at most {MAX_REFERENCE} characters without control characters"
            ),
        });
        return None;
    }
    Some(v.to_owned())
}

/// Starts tracking `new` for `tenant_id`, created by `actor`. Every field
/// is checked, and all problems answered together (422).
pub async fn create(
    state: &AppState,
    tenant_id: TenantId,
    actor: &str,
    new: NewTracking,
) -> Result<Shipment, ApiError> {
    let mut problems = Vec::new();
    let tracking = match TrackingNumber::parse(&new.tracking_number) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(InvalidParam {
                name: "tracking_number".into(),
                reason: e.to_string(),
            });
            None
        }
    };
    if let Some(c) = &new.carrier
        && !c.eq_ignore_ascii_case("ups")
    {
        problems.push(InvalidParam {
            name: "carrier".into(),
            reason: "only `ups` is supported".into(),
        });
    }
    let reference = check_text("reference", new.reference.as_deref(), &mut problems);
    let assigned_to = check_text("assigned_to", new.assigned_to.as_deref(), &mut problems);
    let (Some(tracking), true) = (tracking, problems.is_empty()) else {
        return Err(ApiError::Unprocessable(problems));
    };
    let id = ShipmentId::new();
    let created = db::create(
        &state.pool,
        tenant_id,
        id,
        NewShipment {
            tracking_number: tracking.as_str(),
            reference: reference.as_deref(),
            created_by: actor,
            assigned_to: assigned_to.as_deref(),
        },
    )
    .await?;
    Ok(created)
}
