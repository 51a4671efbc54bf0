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
//! * inside [`request`] before its caller is known ([`Scope::Nobody`]):
//!   no organisation's rows;
//! * inside [`platform`] (or after [`elevate`]): every organisation's, for
//!   a stated reason, counted in the metric
//!   `db_platform_scope_total{reason}`;
//! * in a task with no scope at all: the pool's [`Fallback`], which each
//!   process declares when it opens its pool. The processes that work
//!   across organisations (worker, scheduler, admin commands) declare
//!   platform; the API declares [`Fallback::Nothing`], so that a task it
//!   spawns from a request (task-locals do not cross `tokio::spawn`) or a
//!   background task that forgot to say so reads no organisation's rows.
//!
//! A connection keeps the scope it was handed out with until it goes back
//! to the pool: a transaction begun in one scope stays in it.
//!
//! The queries an operator may run across organisations take a [`Reach`]
//! first: one organisation's rows, or every organisation's with a
//! [`PlatformWide`] witness, which only [`platform_wide`] makes and only
//! where the task is not walled to one organisation (or to none).

use std::{cell::Cell, future::Future};

use crate::domain::TenantId;

/// Whose rows a session may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// No organisation's: a request before its caller is known.
    Nobody,
    /// Every organisation's: cross-tenant work.
    Platform,
    /// One organisation's only.
    Tenant(TenantId),
}

impl Scope {
    /// The value of the `app.tenant_id` setting for this scope.
    pub fn setting(self) -> String {
        match self {
            Scope::Nobody => String::new(),
            Scope::Platform => PLATFORM.to_owned(),
            Scope::Tenant(t) => t.0.to_string(),
        }
    }
}

/// The `app.tenant_id` value of platform scope.
pub const PLATFORM: &str = "platform";

/// What a pool applies for a task with no scope: declared once per process
/// when it opens its pool ([`super::connect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// No organisation's rows (the API).
    Nothing,
    /// Every organisation's, for the reason given: a process whose work is
    /// cross-tenant (worker, scheduler, admin commands, test assertions).
    Platform(&'static str),
}

impl Fallback {
    /// The scope a task without one gets.
    pub fn scope(self) -> Scope {
        match self {
            Fallback::Nothing => Scope::Nobody,
            Fallback::Platform(_) => Scope::Platform,
        }
    }

    /// Counts the declaration of a platform fallback in
    /// `db_platform_scope_total{reason}`.
    pub fn declare(self) {
        if let Fallback::Platform(reason) = self {
            count(reason);
            tracing::debug!(
                reason,
                "database work without a scope runs in platform scope"
            );
        }
    }
}

/// Whose rows an operator's query reads: what a tenant-owned query that
/// may also run across organisations takes first, in place of a tenant id.
/// In SQL it is the filter `($1::uuid is null or tenant_id = $1)` bound to
/// [`Reach::param`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// One organisation's rows only.
    Tenant(TenantId),
    /// Every organisation's, by an operator ([`platform_wide`]).
    Platform(PlatformWide),
}

impl Reach {
    /// The organisation it is confined to, if one.
    pub fn tenant(self) -> Option<TenantId> {
        match self {
            Reach::Tenant(t) => Some(t),
            Reach::Platform(_) => None,
        }
    }

    /// The value bound to `$n` in `($n::uuid is null or tenant_id = $n)`:
    /// the organisation's id, or null for every organisation.
    pub fn param(self) -> Option<uuid::Uuid> {
        self.tenant().map(|t| t.0)
    }

    /// Whether it reads `tenant`'s rows.
    pub fn covers(self, tenant: TenantId) -> bool {
        self.tenant().is_none_or(|t| t == tenant)
    }
}

impl From<TenantId> for Reach {
    fn from(t: TenantId) -> Self {
        Reach::Tenant(t)
    }
}

/// The witness that the code holding it established operator authority:
/// it reads every organisation's rows. Its field is private, so the only
/// way to one is [`platform_wide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlatformWide(());

/// A [`PlatformWide`] witness, unless the current task is walled to one
/// organisation or to none: inside [`platform`] or an [`elevate`]d
/// request (a platform administrator), or in a task with no scope, whose
/// pool's [`Fallback`] then decides (platform for the worker, scheduler and
/// admin commands; nothing for the API). Grants nothing row-level security
/// does not already allow, so it is not counted.
pub fn platform_wide() -> Option<PlatformWide> {
    match current() {
        None | Some(Scope::Platform) => Some(PlatformWide(())),
        Some(Scope::Tenant(_) | Scope::Nobody) => None,
    }
}

tokio::task_local! {
    /// The scope of the current task's database work. A `Cell` so that a
    /// request can start with no organisation (to authenticate its caller)
    /// and [`narrow`] to the caller's organisation once it is known.
    pub static SCOPE: Cell<Scope>;
}

/// The scope of the current task, if it has one (else its pool's
/// [`Fallback`] applies).
pub fn current() -> Option<Scope> {
    SCOPE.try_with(Cell::get).ok()
}

/// The scope a pool with `fallback` applies for the current task.
pub fn effective(fallback: Fallback) -> Scope {
    current().unwrap_or(fallback.scope())
}

fn count(reason: &'static str) {
    metrics::counter!("db_platform_scope_total", "reason" => reason).increment(1);
}

/// Runs `f` with the database walled to `tenant`'s rows.
pub async fn tenant<F: Future>(tenant: TenantId, f: F) -> F::Output {
    SCOPE.scope(Cell::new(Scope::Tenant(tenant)), f).await
}

/// Runs `f` in platform scope, even inside a tenant's or a request's before
/// authentication: the audited path for cross-organisation work. `reason`
/// names why (a short snake_case label) and is counted in
/// `db_platform_scope_total{reason}`.
pub async fn platform<F: Future>(reason: &'static str, f: F) -> F::Output {
    count(reason);
    SCOPE.scope(Cell::new(Scope::Platform), f).await
}

/// Runs `f` seeing no organisation's rows until [`narrow`] (or
/// [`elevate`]) says whose: what the API wraps around every request.
pub async fn request<F: Future>(f: F) -> F::Output {
    SCOPE.scope(Cell::new(Scope::Nobody), f).await
}

/// Runs `f` in `scope`, taken with [`current`] from the task `f` continues
/// (a response body streamed after its handler returned runs outside the
/// request's task-local scope). `None` leaves `f` to the pool's fallback.
/// Grants nothing the continued task did not have, so it is not counted.
pub async fn carry<F: Future>(scope: Option<Scope>, f: F) -> F::Output {
    match scope {
        Some(s) => SCOPE.scope(Cell::new(s), f).await,
        None => f.await,
    }
}

/// Walls the rest of the current [`request`] to `tenant`'s rows. Only ever
/// narrows: a scope already walled to another organisation stays as it is
/// (and `false` says so). Outside a request it does nothing and answers
/// `false`.
pub fn narrow(tenant: TenantId) -> bool {
    SCOPE
        .try_with(|scope| match scope.get() {
            Scope::Nobody | Scope::Platform => {
                scope.set(Scope::Tenant(tenant));
                true
            }
            Scope::Tenant(t) => t == tenant,
        })
        .unwrap_or(false)
}

/// Opens the rest of the current [`request`] to every organisation's rows,
/// for `reason` (counted like [`platform`]): for a platform administrator,
/// once authenticated. Never widens a request already walled to one
/// organisation (`false`); outside a request it does nothing (`false`).
pub fn elevate(reason: &'static str) -> bool {
    SCOPE
        .try_with(|scope| match scope.get() {
            Scope::Nobody => {
                count(reason);
                scope.set(Scope::Platform);
                true
            }
            Scope::Platform => true,
            Scope::Tenant(_) => false,
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_without_scope_takes_its_pools_fallback_and_cannot_narrow() {
        assert_eq!(current(), None);
        assert_eq!(effective(Fallback::Nothing), Scope::Nobody);
        assert_eq!(effective(Fallback::Platform("test")), Scope::Platform);
        let t = TenantId::new();
        assert!(!narrow(t));
        assert!(!elevate("test"));
        assert_eq!(current(), None);
    }

    #[tokio::test]
    async fn a_request_sees_nobody_then_narrows_once_and_never_widens_or_moves() {
        let (a, b) = (TenantId::new(), TenantId::new());
        request(async {
            assert_eq!(current(), Some(Scope::Nobody));
            assert_eq!(effective(Fallback::Platform("test")), Scope::Nobody);
            assert!(narrow(a));
            assert_eq!(current(), Some(Scope::Tenant(a)));
            assert!(!narrow(b));
            assert!(!elevate("test"));
            assert_eq!(current(), Some(Scope::Tenant(a)));
            platform("test", async {
                assert_eq!(current(), Some(Scope::Platform))
            })
            .await;
            assert_eq!(current(), Some(Scope::Tenant(a)));
        })
        .await;
        tenant(b, async { assert_eq!(current(), Some(Scope::Tenant(b))) }).await;
    }

    #[tokio::test]
    async fn a_request_elevates_to_platform_only_before_it_is_walled() {
        request(async {
            assert!(elevate("test"));
            assert_eq!(current(), Some(Scope::Platform));
        })
        .await;
    }

    #[tokio::test]
    async fn only_an_unwalled_task_can_reach_every_organisation() {
        let t = TenantId::new();
        assert!(platform_wide().is_some());
        request(async {
            assert_eq!(platform_wide(), None);
            assert!(narrow(t));
            assert_eq!(platform_wide(), None);
        })
        .await;
        request(async {
            assert!(elevate("test"));
            let all = Reach::Platform(platform_wide().expect("elevated"));
            assert_eq!(all.param(), None);
            assert!(all.covers(t));
        })
        .await;
        tenant(t, async { assert_eq!(platform_wide(), None) }).await;
        assert!(platform("test", async { platform_wide() }).await.is_some());
        assert_eq!(Reach::from(t).param(), Some(t.0));
        assert!(!Reach::from(t).covers(TenantId::new()));
    }

    #[test]
    fn settings_name_the_organisation_the_platform_or_nobody() {
        let t = TenantId::new();
        assert_eq!(Scope::Tenant(t).setting(), t.0.to_string());
        assert_eq!(Scope::Platform.setting(), "platform");
        assert_eq!(Scope::Nobody.setting(), "");
    }
}
