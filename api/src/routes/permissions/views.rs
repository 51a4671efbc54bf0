//! The bodies and answers of the permission endpoints.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, payload::Json};
use shared::{
    db::{
        permissions::{self as db, Effective, Source},
        users::User,
    },
    domain::PermissionSetId,
};

/// A custom permission set's fields.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct SetBody {
    /// Unique in the organisation: 1 to 64 lower-case letters, digits, `.`,
    /// `_`, `-` (not a built-in set's key).
    pub key: String,
    /// Display name, 1 to 100 characters.
    pub name: String,
    /// What it is for (up to 500 characters).
    pub description: Option<String>,
    /// Permissions (`resource:action`), up to 64.
    #[oai(default)]
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Keys of the sets it includes (built-in or the organisation's), up
    /// to 16; no cycles.
    #[oai(default)]
    #[serde(default)]
    pub includes: Vec<String>,
}

/// A permission set.
#[derive(Debug, Object)]
pub struct SetView {
    /// Its id.
    pub id: String,
    /// Its key.
    pub key: String,
    /// Display name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// Whether it is built in (and cannot change).
    pub built_in: bool,
    /// The permissions it lists itself.
    pub permissions: Vec<String>,
    /// Keys of the sets it includes.
    pub includes: Vec<String>,
    /// Every permission it holds with what it includes (single reads only).
    pub all_permissions: Option<Vec<String>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// The view of `s`, its includes named by `keys`.
pub fn set_view(
    s: db::PermissionSet,
    keys: &BTreeMap<PermissionSetId, String>,
    all: Option<Vec<String>>,
) -> SetView {
    SetView {
        id: s.id.to_string(),
        key: s.key,
        name: s.name,
        description: s.description,
        built_in: s.tenant_id.is_none(),
        permissions: s.permissions,
        includes: s
            .includes
            .iter()
            .filter_map(|i| keys.get(i).cloned())
            .collect(),
        all_permissions: all,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

/// A page of sets.
#[derive(Debug, Object)]
pub struct SetPage {
    /// Sets in id order (built-in first).
    pub items: Vec<SetView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Answers with a page of sets.
#[derive(Debug, ApiResponse)]
pub enum SetPageResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<SetPage>),
}

/// Answers with a set.
#[derive(Debug, ApiResponse)]
pub enum SetResponse {
    /// The set.
    #[oai(status = 200)]
    Ok(Json<SetView>),
    /// Created.
    #[oai(status = 201)]
    Created(Json<SetView>, #[oai(header = "Location")] String),
}

/// Where a permission comes from.
#[derive(Debug, Object)]
pub struct SourceView {
    /// `set`, `grant` or `delegation`.
    pub kind: String,
    /// For a set: the user's base set.
    pub set: Option<String>,
    /// For a set: the set that lists it (the base set or one it includes).
    pub listed_in: Option<String>,
    /// For a set: `assigned`, `role:<ROLE>`, or `default` (Member, when no
    /// role of the caller maps to a set).
    pub via: Option<String>,
    /// For a delegation: its id.
    pub delegation_id: Option<String>,
    /// For a delegation: who lent it.
    pub delegator_id: Option<String>,
    /// For a delegation: until when.
    pub ends_at: Option<DateTime<Utc>>,
}

/// The view of `s`.
pub fn source_view(s: &Source) -> SourceView {
    let mut v = SourceView {
        kind: String::new(),
        set: None,
        listed_in: None,
        via: None,
        delegation_id: None,
        delegator_id: None,
        ends_at: None,
    };
    match s {
        Source::Set { root, set, via } => {
            v.kind = "set".into();
            v.set = Some(root.clone());
            v.listed_in = Some(set.clone());
            v.via = Some(via.clone());
        }
        Source::Grant => v.kind = "grant".into(),
        Source::Delegation {
            id,
            delegator_id,
            ends_at,
        } => {
            v.kind = "delegation".into();
            v.delegation_id = Some(id.to_string());
            v.delegator_id = Some(delegator_id.to_string());
            v.ends_at = Some(*ends_at);
        }
    }
    v
}

/// One held permission.
#[derive(Debug, Object)]
pub struct HeldPermission {
    /// `resource:action`.
    pub permission: String,
    /// Every source it comes from.
    pub sources: Vec<SourceView>,
}

/// A user's effective permissions.
#[derive(Debug, Object)]
pub struct EffectivePermissions {
    /// The user.
    pub user_id: String,
    /// Its role.
    pub role: String,
    /// Whether a set is assigned to it (else its role's set applies).
    pub set_assigned: bool,
    /// What it holds now, in vocabulary order.
    pub permissions: Vec<HeldPermission>,
}

/// The view of `held` for `u`.
pub fn effective_view(u: &User, held: &Effective, assigned: bool) -> EffectivePermissions {
    EffectivePermissions {
        user_id: u.id.to_string(),
        role: u.role.clone(),
        set_assigned: assigned,
        permissions: held
            .iter()
            .map(|(p, sources)| HeldPermission {
                permission: p.as_str().to_owned(),
                sources: sources.iter().map(source_view).collect(),
            })
            .collect(),
    }
}

/// Answers with effective permissions.
#[derive(Debug, ApiResponse)]
pub enum EffectiveResponse {
    /// What the user holds.
    #[oai(status = 200)]
    Ok(Json<EffectivePermissions>),
}

/// A set to assign.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// The set's id.
    pub set_id: String,
}

/// A permission to grant.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// `resource:action`.
    pub permission: String,
}

/// Answers a removal.
#[derive(Debug, ApiResponse)]
pub enum RemovedResponse {
    /// Removed.
    #[oai(status = 204)]
    NoContent,
}

/// A check.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// `resource:action`.
    pub permission: String,
    /// The user to check (default: the caller).
    pub user_id: Option<String>,
}

/// The answer of a check.
#[derive(Debug, Object)]
pub struct CheckResult {
    /// The permission checked.
    pub permission: String,
    /// Whether it is held now.
    pub allowed: bool,
    /// Where it comes from (empty when not held).
    pub sources: Vec<SourceView>,
}

/// Answers a check.
#[derive(Debug, ApiResponse)]
pub enum CheckResponse {
    /// The result.
    #[oai(status = 200)]
    Ok(Json<CheckResult>),
}

/// How many users hold a set.
#[derive(Debug, Object)]
pub struct SetUsage {
    /// The set.
    pub set_id: String,
    /// Its key.
    pub key: String,
    /// Users it is assigned to.
    pub assigned: i64,
    /// Users holding it through their role (no set assigned).
    pub by_role: i64,
}

/// Permission statistics of the organisation.
#[derive(Debug, Object)]
pub struct PermissionStatistics {
    /// Per set.
    pub sets: Vec<SetUsage>,
    /// Custom sets.
    pub custom_sets: i64,
    /// Single grants.
    pub grants: i64,
    /// Delegations in their window and not revoked.
    pub active_delegations: i64,
    /// Delegations revoked.
    pub revoked_delegations: i64,
}

/// Answers with statistics.
#[derive(Debug, ApiResponse)]
pub enum StatsResponse {
    /// The statistics.
    #[oai(status = 200)]
    Ok(Json<PermissionStatistics>),
}
