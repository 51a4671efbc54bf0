//! Routes, one module per resource.

pub mod health;
pub mod inbox;
pub mod notifications;
pub mod templates;
pub mod users;

use poem_openapi::Tags;

/// OpenAPI tags.
#[derive(Debug, Tags)]
pub enum ApiTags {
    /// Sending notifications and reading their status.
    Notifications,
    /// The signed-in user and their in-app inbox.
    Users,
    /// Liveness and readiness.
    Health,
    /// Administering an organisation: its message templates.
    Admin,
}
