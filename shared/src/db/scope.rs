//! Which organisation's rows a database session may touch: the scope that
//! row-level security enforces behind the tenant filters in the SQL.
//!
//! Every table with a `tenant_id` column carries the policy `tenant_wall`
//! (migration `20261209001000_row_level_security`): a session whose
//! `app.tenant_id` setting names an organisation sees and writes only that
//! organisation's rows; `platform` sees every row; anything else (unset,
//! empty) sees none. The pool ([`super::connect_url`]) writes the setting on
//! each connection it hands out, from the task-local [`SCOPE`] of the task
//! that asks:
//!
//! * inside [`tenant`] (or after [`narrow`] inside [`request`]): that
//!   organisation;
//! * inside [`platform`], or in a task with no scope at all: platform.
//!
//! Platform is the fallback because the processes that work across
//! organisations (the dispatcher, the workers, the scheduler, admin
//! commands) and the API's work before a caller is known (sign-in, API-key
//! lookup, provider callbacks) all need it. A task spawned from a request
//! does not inherit the request's scope (task-locals do not cross
//! `tokio::spawn`) and so runs in platform scope too.
//!
//! A connection keeps the scope it was handed out with until it goes back
//! to the pool: a transaction begun in one scope stays in it.

use std::{cell::Cell, future::Future};

use crate::domain::TenantId;

/// Whose rows a session may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every organisation's: cross-tenant work.
    Platform,
    /// One organisation's only.
    Tenant(TenantId),
}

impl Scope {
    /// The value of the `app.tenant_id` setting for this scope.
    pub fn setting(self) -> String {
        match self {
            Scope::Platform => PLATFORM.to_owned(),
            Scope::Tenant(t) => t.0.to_string(),
        }
    }
}

/// The `app.tenant_id` value of platform scope.
pub const PLATFORM: &str = "platform";

tokio::task_local! {
    /// The scope of the current task's database work. A `Cell` so that a
    /// request can start in platform scope (to authenticate its caller)
    /// and [`narrow`] to the caller's organisation once it is known.
    pub static SCOPE: Cell<Scope>;
}

/// The scope the pool applies for the current task.
pub fn current() -> Scope {
    SCOPE.try_with(Cell::get).unwrap_or(Scope::Platform)
}

/// Runs `f` with the database walled to `tenant`'s rows.
pub async fn tenant<F: Future>(tenant: TenantId, f: F) -> F::Output {
    SCOPE.scope(Cell::new(Scope::Tenant(tenant)), f).await
}

/// Runs `f` in platform scope, even inside a tenant's: for the few
/// cross-organisation reads a tenant's request makes on purpose.
pub async fn platform<F: Future>(f: F) -> F::Output {
    SCOPE.scope(Cell::new(Scope::Platform), f).await
}

/// Runs `f` in platform scope that [`narrow`] may turn into one
/// organisation's: what the API wraps around every request.
pub async fn request<F: Future>(f: F) -> F::Output {
    SCOPE.scope(Cell::new(Scope::Platform), f).await
}

/// Walls the rest of the current [`request`] to `tenant`'s rows. Only ever
/// narrows: a scope already walled to another organisation stays as it is
/// (and `false` says so). Outside a request it does nothing and answers
/// `false`.
pub fn narrow(tenant: TenantId) -> bool {
    SCOPE
        .try_with(|scope| match scope.get() {
            Scope::Platform => {
                scope.set(Scope::Tenant(tenant));
                true
            }
            Scope::Tenant(t) => t == tenant,
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_without_scope_is_platform_and_narrowing_needs_a_request() {
        assert_eq!(current(), Scope::Platform);
        let t = TenantId::new();
        assert!(!narrow(t));
        assert_eq!(current(), Scope::Platform);
    }

    #[tokio::test]
    async fn a_request_narrows_once_and_never_widens_or_moves() {
        let (a, b) = (TenantId::new(), TenantId::new());
        request(async {
            assert_eq!(current(), Scope::Platform);
            assert!(narrow(a));
            assert_eq!(current(), Scope::Tenant(a));
            assert!(!narrow(b));
            assert_eq!(current(), Scope::Tenant(a));
            platform(async { assert_eq!(current(), Scope::Platform) }).await;
            assert_eq!(current(), Scope::Tenant(a));
        })
        .await;
        tenant(b, async { assert_eq!(current(), Scope::Tenant(b)) }).await;
    }

    #[test]
    fn settings_name_the_organisation_or_the_platform() {
        let t = TenantId::new();
        assert_eq!(Scope::Tenant(t).setting(), t.0.to_string());
        assert_eq!(Scope::Platform.setting(), "platform");
    }
}
