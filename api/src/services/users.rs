//! The rules a platform user's fields follow, for the user administration
//! endpoints and for invitations that create users.

use shared::domain::EmailAddress;

use crate::error::ApiError;

/// Checks an optional name field.
pub fn check_name(field: &str, v: Option<&str>) -> Result<Option<String>, ApiError> {
    match v.map(str::trim) {
        None => Ok(None),
        Some(s) if s.is_empty() || s.chars().count() > 100 || s.chars().any(char::is_control) => {
            Err(ApiError::invalid(
                field,
                "must be 1 to 100 characters without control characters",
            ))
        }
        Some(s) => Ok(Some(s.to_owned())),
    }
}

/// Parses an email address field.
pub fn check_email(field: &str, v: &str) -> Result<EmailAddress, ApiError> {
    EmailAddress::parse(v.trim()).map_err(|e| ApiError::invalid(field, e.0))
}
