//! Answers that more than one resource gives: notifications per status (a
//! batch's and a CSV job's) and a platform user (the user administration
//! endpoints' and an accepted invitation's).

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use shared::db::users;

/// Notifications per status.
#[derive(Debug, Clone, Default, Object)]
pub struct StatusCounts {
    /// Waiting for a worker.
    pub queued: i64,
    /// Held back (quiet hours, providers paused).
    pub deferred: i64,
    /// Being sent.
    pub sending: i64,
    /// Accepted by the provider (in-app: in the inbox).
    pub sent: i64,
    /// Reported delivered.
    pub delivered: i64,
    /// Reported read.
    pub read: i64,
    /// Failed for good.
    pub failed: i64,
    /// Bounced.
    pub bounced: i64,
    /// Ruled out by the subscriber's preferences.
    pub suppressed: i64,
    /// Cancelled.
    pub cancelled: i64,
}

impl StatusCounts {
    /// From `(status, count)` rows.
    pub fn from_rows(rows: &[(String, i64)]) -> Self {
        let mut by = StatusCounts::default();
        for (status, n) in rows {
            let slot = match status.as_str() {
                "queued" => &mut by.queued,
                "deferred" => &mut by.deferred,
                "sending" => &mut by.sending,
                "sent" => &mut by.sent,
                "delivered" => &mut by.delivered,
                "read" => &mut by.read,
                "failed" => &mut by.failed,
                "bounced" => &mut by.bounced,
                "suppressed" => &mut by.suppressed,
                _ => &mut by.cancelled,
            };
            *slot += n;
        }
        by
    }
}

/// A user.
#[derive(Debug, Object)]
pub struct UserView {
    /// Its id (its tokens' `sub`).
    pub id: String,
    /// Its organisation.
    pub organization_id: String,
    /// Sign-in address.
    pub email: String,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Role.
    pub role: String,
    /// `active` or `inactive`.
    pub status: String,
    /// Whether its password is temporary.
    pub must_change_password: bool,
    /// Last sign-in.
    pub last_login_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<users::User> for UserView {
    fn from(u: users::User) -> Self {
        Self {
            id: u.id.to_string(),
            organization_id: u.tenant_id.to_string(),
            email: u.email,
            first_name: u.first_name,
            last_name: u.last_name,
            role: u.role,
            status: u.status,
            must_change_password: u.must_change_password,
            last_login_at: u.last_login_at,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}
