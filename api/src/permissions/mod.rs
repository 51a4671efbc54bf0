//! Permission checks at the edge: what each operation requires
//! ([`routes::ROUTES`]) and the lookup of a request's operation in it.
//!
//! Handlers check users with [`crate::access::Principal::require`];
//! API keys are checked here, against their scopes, before any handler
//! runs ([`key_may`]).

pub mod routes;

use shared::permissions::Permission;

/// What an operation requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials (health, provider callbacks, sign-in, invitation
    /// tokens).
    Public,
    /// The signed-in user acting on itself (`/users/me`, sign-out,
    /// delegating its own permissions); an API key never may.
    Me,
    /// A user acting on its own resource, or anyone holding the permission
    /// (an API key needs it in its scopes).
    Own(Permission),
    /// The permission.
    Require(Permission),
}

impl Access {
    /// The permission it names, if any.
    pub fn permission(self) -> Option<Permission> {
        match self {
            Access::Own(p) | Access::Require(p) => Some(p),
            Access::Public | Access::Me => None,
        }
    }
}

/// The declared access of the operation `method` `path` answers (a
/// concrete path: `{x}` segments match any one segment, literal segments
/// win over parameters), or `None` when no operation is declared for it.
pub fn access_of(method: &str, path: &str) -> Option<Access> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let mut best: Option<(usize, Access)> = None;
    for (m, template, access) in routes::ROUTES {
        if !m.eq_ignore_ascii_case(method) {
            continue;
        }
        let parts: Vec<&str> = template.trim_end_matches('/').split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut literal = 0;
        let matches = parts.iter().zip(&segments).all(|(t, s)| {
            if t.starts_with('{') && t.ends_with('}') {
                !s.is_empty()
            } else if t == s {
                literal += 1;
                true
            } else {
                false
            }
        });
        if matches && best.is_none_or(|(l, _)| literal > l) {
            best = Some((literal, *access));
        }
    }
    best.map(|(_, a)| a)
}

/// Whether an API key with `scopes` (`None`: every permission) may call
/// `method` `path`. Undeclared operations and user-only ones are refused
/// to scoped keys; an unscoped key may do what keys always could. The
/// error is the 403 detail.
pub fn key_may(
    scopes: Option<&[Permission]>,
    method: &str,
    path: &str,
) -> Result<(), &'static str> {
    let Some(scopes) = scopes else {
        return Ok(());
    };
    match access_of(method, path).and_then(Access::permission) {
        Some(p) if scopes.contains(&p) => Ok(()),
        Some(p) => Err(p.required()),
        None => Err("this API key's scopes do not reach this operation"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_win_over_parameters() {
        assert_eq!(
            access_of("GET", "/api/v1/admin/users/stats"),
            Some(Access::Require(Permission::UsersRead))
        );
        assert_eq!(
            access_of("PATCH", "/api/v1/admin/users/0190/password"),
            Some(Access::Own(Permission::UsersManage))
        );
        assert_eq!(
            access_of("post", "/api/v1/services/notifications/send"),
            Some(Access::Require(Permission::NotificationsSend))
        );
        assert_eq!(access_of("GET", "/api/v1/nothing"), None);
    }

    #[test]
    fn a_scoped_key_reaches_only_its_scopes() {
        let send = [Permission::NotificationsSend];
        assert!(key_may(Some(&send), "POST", "/api/v1/services/notifications/send").is_ok());
        assert_eq!(
            key_may(Some(&send), "GET", "/api/v1/admin/templates"),
            Err(Permission::TemplatesRead.required())
        );
        assert!(key_may(None, "GET", "/api/v1/admin/templates").is_ok());
    }
}
