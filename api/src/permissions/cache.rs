//! Users' effective permissions, kept in this process for at most
//! [`PERMISSIONS_CACHE_SECS`] so that a user's requests do not each ask
//! Postgres again.
//!
//! * Freshness is judged on the permissions clock
//!   ([`crate::AppState::permissions_clock`]), the one delegation windows
//!   are judged on, so tests move time instead of waiting. An entry is also
//!   never kept past the end of a delegation it counts.
//! * A change made through this replica (any write under
//!   `/api/v1/permissions`, to a user's set or grants, or to a user through
//!   `/api/v1/admin/users`) drops the organisation's entries once its
//!   handler has answered ([`affects_permissions`], [`PermissionCache::changed`]);
//!   a change made through another replica, or straight in Postgres, takes
//!   effect here within the bound.
//! * A computation that started before a change is not kept: every change
//!   moves a generation counter, and an entry is stored only if the
//!   counter did not move while it was read.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::{DateTime, TimeDelta, Utc};
use shared::{
    db::permissions::{Effective, Source},
    domain::{TenantId, UserId},
};

/// How long a user's effective permissions are trusted without asking
/// Postgres again, on replicas that did not make the change.
pub const PERMISSIONS_CACHE_SECS: i64 = 5;

/// Most entries kept; past it the stale ones go, then all.
const CAPACITY: usize = 10_000;

/// Whose permissions: the organisation, the user (when the token's subject
/// is one) and the token's roles, which decide the base set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: TenantId,
    user: Option<UserId>,
    roles: Vec<String>,
}

#[derive(Debug)]
struct Entry {
    held: Arc<Effective>,
    read_at: DateTime<Utc>,
    fresh_until: DateTime<Utc>,
}

/// Effective permissions by user, for a bounded time.
#[derive(Debug)]
pub struct PermissionCache {
    bound: TimeDelta,
    entries: Mutex<HashMap<Key, Entry>>,
    generation: AtomicU64,
}

impl Default for PermissionCache {
    fn default() -> Self {
        Self::new(TimeDelta::seconds(PERMISSIONS_CACHE_SECS))
    }
}

/// A read in progress: what to store its answer under, if nothing changed
/// meanwhile.
#[derive(Debug)]
pub struct Pending {
    key: Key,
    generation: u64,
    started: DateTime<Utc>,
}

impl PermissionCache {
    /// A cache trusting an entry for `bound`.
    pub fn new(bound: TimeDelta) -> Self {
        Self {
            bound,
            entries: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// The permissions of `user` of `tenant` with `roles` at `now`, if an
    /// entry is fresh; else what to [`store`](Self::store) the answer read
    /// from Postgres under.
    pub fn get(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
        roles: &[String],
        now: DateTime<Utc>,
    ) -> Result<Arc<Effective>, Pending> {
        let mut roles = roles.to_vec();
        roles.sort();
        let key = Key {
            tenant,
            user,
            roles,
        };
        // Read before the entry: a change after this makes the read stale.
        let generation = self.generation.load(Ordering::Acquire);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&key) {
            // A clock moved back is not trusted either.
            Some(e) if e.read_at <= now && now < e.fresh_until => Ok(e.held.clone()),
            _ => Err(Pending {
                key,
                generation,
                started: now,
            }),
        }
    }

    /// Keeps `held`, read for `pending`, unless a change was made through
    /// this replica since the read began.
    pub fn store(&self, pending: Pending, held: Arc<Effective>) {
        let ends = held
            .values()
            .flatten()
            .filter_map(|s| match s {
                Source::Delegation { ends_at, .. } => Some(*ends_at),
                _ => None,
            })
            .min();
        let fresh_until = ends.map_or(pending.started + self.bound, |e| {
            e.min(pending.started + self.bound)
        });
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != pending.generation {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| e.fresh_until > pending.started);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            pending.key,
            Entry {
                held,
                read_at: pending.started,
                fresh_until,
            },
        );
    }

    /// Drops what a change through this replica may have made stale: one
    /// organisation's entries, or every entry (`None`: a platform
    /// administrator's change may reach any organisation).
    pub fn changed(&self, tenant: Option<TenantId>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        match tenant {
            Some(t) => entries.retain(|k, _| k.tenant != t),
            None => entries.clear(),
        }
    }

    /// How many entries are kept (fresh or not).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether request `method` `path` may change someone's effective
/// permissions: a write to permission sets, grants and delegations
/// (`/api/v1/permissions/…`, `/api/v1/users/{id}/permission…`), or to a
/// user (its role, its status) under `/api/v1/admin/users`.
pub fn affects_permissions(method: &poem::http::Method, path: &str) -> bool {
    if matches!(
        *method,
        poem::http::Method::GET | poem::http::Method::HEAD | poem::http::Method::OPTIONS
    ) {
        return false;
    }
    if path.starts_with("/api/v1/permissions/check") {
        return false;
    }
    if path.starts_with("/api/v1/permissions/") || path.starts_with("/api/v1/admin/users") {
        return true;
    }
    let mut parts = path.trim_end_matches('/').split('/').skip(1);
    matches!(
        (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next()
        ),
        (Some("api"), Some("v1"), Some("users"), Some(id), Some(last))
            if id != "me" && last.starts_with("permission")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::Method;
    use shared::permissions::Permission;

    fn held(permission: Permission, sources: Vec<Source>) -> Arc<Effective> {
        Arc::new(Effective::from([(permission, sources)]))
    }

    #[test]
    fn an_entry_is_trusted_for_the_bound_and_dropped_at_once_by_a_change_here() {
        let cache = PermissionCache::new(TimeDelta::seconds(5));
        let (t, other) = (TenantId::new(), TenantId::new());
        let user = Some(UserId::new());
        let roles = ["DOCTOR".to_owned()];
        let now = Utc::now();
        let pending = cache.get(t, user, &roles, now).unwrap_err();
        cache.store(pending, held(Permission::AuditRead, vec![]));
        assert!(cache.get(t, user, &roles, now).is_ok());
        assert!(
            cache
                .get(t, user, &roles, now + TimeDelta::milliseconds(4999))
                .is_ok()
        );
        assert!(
            cache
                .get(t, user, &roles, now + TimeDelta::seconds(5))
                .is_err()
        );
        assert!(
            cache
                .get(t, user, &roles, now - TimeDelta::seconds(1))
                .is_err()
        );
        // Another organisation's change leaves it; its own drops it.
        cache.changed(Some(other));
        assert!(cache.get(t, user, &roles, now).is_ok());
        cache.changed(Some(t));
        assert!(cache.get(t, user, &roles, now).is_err());
    }

    #[test]
    fn a_read_that_began_before_a_change_is_not_kept() {
        let cache = PermissionCache::new(TimeDelta::seconds(5));
        let t = TenantId::new();
        let now = Utc::now();
        let pending = cache.get(t, None, &[], now).unwrap_err();
        cache.changed(None);
        cache.store(pending, held(Permission::AuditRead, vec![]));
        assert!(cache.is_empty());
    }

    #[test]
    fn an_entry_ends_with_the_first_delegation_it_counts() {
        let cache = PermissionCache::new(TimeDelta::seconds(5));
        let t = TenantId::new();
        let now = Utc::now();
        let pending = cache.get(t, None, &[], now).unwrap_err();
        let lent = Source::Delegation {
            id: uuid::Uuid::now_v7(),
            delegator_id: UserId::new(),
            ends_at: now + TimeDelta::seconds(2),
        };
        cache.store(pending, held(Permission::AuditRead, vec![lent]));
        assert!(cache.get(t, None, &[], now + TimeDelta::seconds(1)).is_ok());
        assert!(
            cache
                .get(t, None, &[], now + TimeDelta::seconds(2))
                .is_err()
        );
    }

    #[test]
    fn writes_to_sets_grants_delegations_and_users_count_as_changes() {
        for (m, p) in [
            (Method::POST, "/api/v1/permissions/sets"),
            (Method::POST, "/api/v1/permissions/delegations/x/revoke"),
            (Method::PUT, "/api/v1/users/u1/permission-set"),
            (Method::DELETE, "/api/v1/users/u1/permissions/audit:read"),
            (Method::PATCH, "/api/v1/admin/users/u1/deactivate"),
        ] {
            assert!(affects_permissions(&m, p), "{m} {p}");
        }
        for (m, p) in [
            (Method::GET, "/api/v1/permissions/sets"),
            (Method::PUT, "/api/v1/users/me/preferences"),
            (Method::POST, "/api/v1/services/notifications/send"),
            (Method::POST, "/api/v1/permissions/check"),
        ] {
            assert!(!affects_permissions(&m, p), "{m} {p}");
        }
    }
}
