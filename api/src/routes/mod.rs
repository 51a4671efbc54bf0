//! Routes, one module per resource; [`views`] holds the answers several
//! resources give.

pub mod admin_users;
pub mod alerts;
pub mod audit;
pub mod batches;
pub mod broadcasts;
pub mod bulk;
pub mod callbacks;
pub mod errors;
pub mod health;
pub mod inbox;
pub mod invitations;
pub mod limits;
pub mod lookups;
pub mod notifications;
pub mod ops;
pub mod organizations;
pub mod permissions;
pub mod providers;
pub mod reports;
pub mod security;
pub mod sessions;
pub mod shipments;
pub mod subscribers;
pub mod templates;
pub mod topics;
pub mod users;
pub mod views;
pub mod webhooks;
pub mod workflows;

use poem_openapi::Tags;

/// OpenAPI tags.
#[derive(Debug, Tags)]
pub enum ApiTags {
    /// Sending notifications and reading their status.
    Notifications,
    /// The tenant's end users: contact points, profiles and preferences.
    Subscribers,
    /// The signed-in user and their in-app inbox.
    Users,
    /// Administering an organisation: its providers, message templates and
    /// webhook endpoints.
    Admin,
    /// UPS shipments and their tracking.
    Shipments,
    /// Liveness and readiness.
    Health,
    /// Providers' delivery callbacks, each checked against its provider
    /// config's signing secret.
    Webhooks,
    /// Running the platform: queues, failed work, pausing, workers, the
    /// scheduler, providers and search.
    Operations,
    /// Delivery reports, their schedules and the volume forecast.
    Reports,
}
