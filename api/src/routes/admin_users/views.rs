//! What the user administration endpoints take and answer, and the checks on
//! names, emails and roles.

use super::*;

/// A new user.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Sign-in address (unique on the platform).
    pub email: String,
    /// Given name (up to 100 characters).
    pub first_name: Option<String>,
    /// Family name (up to 100 characters).
    pub last_name: Option<String>,
    /// ADMIN, DOCTOR, LAB_TECH, PHARMACIST, MARKETER, SUPPORT, SALES,
    /// DISTRIBUTOR, MASTER_DISTRIBUTOR, OFFICE_ADMIN, MEDICAL_STAFF,
    /// IVR_COMPANY, SHIPPING_LOGISTICS or CHP_ADMIN.
    pub role: String,
    /// A temporary password (the password policy applies); it must be
    /// changed at first sign-in.
    pub temporary_password: String,
    /// The organisation (platform admins; the caller's own otherwise).
    pub organization_id: Option<String>,
}

/// Changes to a user; absent fields stay.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// Given name: 1 to 100 characters, not blank, no control characters.
    #[oai(validator(
        max_length = 100,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    ))]
    pub first_name: Option<String>,
    /// Family name, as the given name.
    #[oai(validator(
        max_length = 100,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    ))]
    pub last_name: Option<String>,
    /// Role.
    #[oai(validator(
        pattern = "^(ADMIN|DOCTOR|LAB_TECH|PHARMACIST|MARKETER|SUPPORT|SALES|DISTRIBUTOR|MASTER_DISTRIBUTOR|OFFICE_ADMIN|MEDICAL_STAFF|IVR_COMPANY|SHIPPING_LOGISTICS|CHP_ADMIN)$"
    ))]
    pub role: Option<String>,
}

/// A new password.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The new password: 12 to 128 characters with a lower-case letter, an
    /// upper-case letter and a digit.
    pub password: String,
    /// The current password (required when changing one's own).
    pub current_password: Option<String>,
}

/// A page of users.
#[derive(Debug, Object)]
pub struct UserPage {
    /// Users in creation order.
    pub items: Vec<UserView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A count.
#[derive(Debug, Object)]
pub struct Count {
    /// Role (or status).
    pub key: String,
    /// Status.
    pub status: String,
    /// How many.
    pub count: i64,
}

/// Answers with a user.
#[derive(Debug, ApiResponse)]
pub enum UserResponse {
    /// The user.
    #[oai(status = 200)]
    Ok(Json<UserView>),
    /// Created.
    #[oai(status = 201)]
    Created(Json<UserView>, #[oai(header = "Location")] String),
}

/// Answers with a page.
#[derive(Debug, ApiResponse)]
pub enum PageResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<UserPage>),
}

/// Answers with counts.
#[derive(Debug, ApiResponse)]
pub enum StatsResponse {
    /// Users per role and status.
    #[oai(status = 200)]
    Ok(Json<Vec<Count>>),
}

/// What revoking a user's sessions did.
#[derive(Debug, Object)]
pub struct SessionsRevoked {
    /// How many live sessions were revoked.
    pub revoked: u64,
}

/// Answers to revoking a user's sessions.
#[derive(Debug, ApiResponse)]
pub enum SessionsRevokedResponse {
    /// Revoked; their tokens stop working and their WebSockets are closed.
    #[oai(status = 200)]
    Ok(Json<SessionsRevoked>),
}

/// What unlocking did.
#[derive(Debug, Object)]
pub struct Unlocked {
    /// Whether the user's sign-in address was waiting or locked.
    pub was_locked: bool,
}

/// Answers to an unlock.
#[derive(Debug, ApiResponse)]
pub enum UnlockResponse {
    /// The user may sign in again at once; its failures are forgotten.
    #[oai(status = 200)]
    Ok(Json<Unlocked>),
}

/// Answers with nothing.
#[derive(Debug, ApiResponse)]
pub enum AcceptedResponse {
    /// Queued.
    #[oai(status = 202)]
    Accepted,
}
