//! Security events: sign-ins, lockouts, unlocks, refresh-token reuse,
//! session revocations, API key changes and refusals and rate-limit
//! refusals, per organisation. A failed sign-in with an unknown
//! address has no organisation (`tenant_id` null): only platform admins see
//! that stream. Never a password or token; IP and user agent are truncated
//! by [`Event::new`].

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::scope::{PlatformWide, Reach};
use crate::domain::{TenantId, UserId};

/// Every kind of event, for filters and statistics.
pub const KINDS: &[&str] = &[
    LOGIN_SUCCEEDED,
    LOGIN_FAILED,
    LOGIN_THROTTLED,
    ACCOUNT_LOCKED,
    ACCOUNT_UNLOCKED,
    REFRESH_REUSED,
    SESSION_REVOKED,
    API_KEY_CREATED,
    API_KEY_REVOKED,
    API_KEY_NETWORKS_CHANGED,
    API_KEY_ADDRESS_REFUSED,
    RATE_LIMIT_REFUSED,
    PERMISSION_CHANGED,
];
/// A sign-in that issued a session.
pub const LOGIN_SUCCEEDED: &str = "login.succeeded";
/// A wrong address or password (or an inactive user).
pub const LOGIN_FAILED: &str = "login.failed";
/// A sign-in refused unchecked while its account or address waits or is
/// locked.
pub const LOGIN_THROTTLED: &str = "login.throttled";
/// An account (or client address) locked after too many failures.
pub const ACCOUNT_LOCKED: &str = "account.locked";
/// An admin unlocked an account.
pub const ACCOUNT_UNLOCKED: &str = "account.unlocked";
/// A used refresh token was presented again; its session was revoked.
pub const REFRESH_REUSED: &str = "refresh_token.reused";
/// A session ended by sign-out, by its user or by an admin.
pub const SESSION_REVOKED: &str = "session.revoked";

/// An API key was issued.
pub const API_KEY_CREATED: &str = "api_key.created";
/// An API key was revoked.
pub const API_KEY_REVOKED: &str = "api_key.revoked";
/// An API key's network allowlist was set or cleared.
pub const API_KEY_NETWORKS_CHANGED: &str = "api_key.networks_changed";
/// A request with an API key came from an address outside its allowlist
/// (recorded at most once per key per minute by each API instance).
pub const API_KEY_ADDRESS_REFUSED: &str = "api_key.address_refused";
/// A request refused by its rate limit (recorded at most once per
/// credential or client address and class per minute by each API
/// instance).
pub const RATE_LIMIT_REFUSED: &str = "rate_limit.refused";

/// A permission set, a user's set or grants, or a delegation changed.
pub const PERMISSION_CHANGED: &str = "permission.changed";

/// Longest stored IP text.
pub const MAX_IP: usize = 64;
/// Longest stored user agent, in characters.
pub const MAX_USER_AGENT: usize = 256;

/// One event to record.
#[derive(Debug, Clone)]
pub struct Event {
    /// The organisation, when known.
    pub tenant_id: Option<TenantId>,
    /// One of [`KINDS`].
    pub kind: &'static str,
    /// The user concerned, when known.
    pub user_id: Option<UserId>,
    /// The session concerned.
    pub session_id: Option<Uuid>,
    /// The client address.
    pub ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// Extra, non-sensitive facts.
    pub details: Value,
}

impl Event {
    /// An event with the client's address and user agent truncated to what
    /// is stored.
    pub fn new(
        tenant_id: Option<TenantId>,
        kind: &'static str,
        user_id: Option<UserId>,
        ip: Option<&str>,
        user_agent: Option<&str>,
    ) -> Self {
        Self {
            tenant_id,
            kind,
            user_id,
            session_id: None,
            ip: ip.map(|s| truncate(s, MAX_IP)),
            user_agent: user_agent.map(|s| truncate(s, MAX_USER_AGENT)),
            details: Value::Object(Default::default()),
        }
    }

    /// With a session.
    pub fn session(mut self, id: Uuid) -> Self {
        self.session_id = Some(id);
        self
    }

    /// With details.
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// The first `max` characters of `s`, without control characters.
pub fn truncate(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Appends events.
#[tracing::instrument(skip_all)]
pub async fn record(db: impl PgExecutor<'_>, events: &[Event]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut q = sqlx::QueryBuilder::new(
        "insert into security_events (tenant_id, kind, user_id, session_id, ip, user_agent, details) ",
    );
    q.push_values(events, |mut b, e| {
        b.push_bind(e.tenant_id)
            .push_bind(e.kind)
            .push_bind(e.user_id)
            .push_bind(e.session_id)
            .push_bind(&e.ip)
            .push_bind(&e.user_agent)
            .push_bind(&e.details);
    });
    q.build().execute(db).await?;
    Ok(())
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its id (ascending in time).
    pub id: i64,
    /// The organisation.
    pub tenant_id: Option<TenantId>,
    /// Its kind.
    pub kind: String,
    /// The user.
    pub user_id: Option<UserId>,
    /// The session.
    pub session_id: Option<Uuid>,
    /// The client address.
    pub ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// Extra facts.
    pub details: Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Which organisations' events a reader sees.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Those within a reach: one organisation's, or (an operator's) every
    /// event.
    Within(Reach),
    /// Those without an organisation (unknown addresses), for an operator.
    Unowned(PlatformWide),
}

/// Filters for [`list`] and [`counts`]; every field narrows.
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    /// Whose events.
    pub scope: Scope,
    /// Exact kind.
    pub kind: Option<&'a str>,
    /// One user.
    pub user_id: Option<UserId>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
    /// Older than this id (newest first paging).
    pub before_id: Option<i64>,
}

impl Filter<'_> {
    /// `$1` and `$2` of the filter's `where` clause: the organisation (null
    /// for every one), and whether only events without an organisation.
    /// `$3` to `$7` are the rest of the filter, in field order.
    fn scope_params(self) -> (Option<Uuid>, bool) {
        match self.scope {
            Scope::Within(reach) => (reach.param(), false),
            Scope::Unowned(_) => (None, true),
        }
    }
}

/// Events newest first.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    f: Filter<'_>,
    limit: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    let (tenant, platform) = f.scope_params();
    sqlx::query_as!(
        Row,
        r#"select id, tenant_id as "tenant_id: TenantId", kind, user_id as "user_id: UserId",
             session_id, ip,
             user_agent, details, created_at
         from security_events
         where ($1::uuid is null or tenant_id = $1) and (not $2 or tenant_id is null)
           and ($3::text is null or kind = $3) and ($4::uuid is null or user_id = $4)
           and ($5::timestamptz is null or created_at >= $5)
           and ($6::timestamptz is null or created_at < $6) and ($7::bigint is null or id < $7)
         order by id desc limit $8"#,
        tenant,
        platform,
        f.kind,
        f.user_id.map(|u| u.0),
        f.since,
        f.until,
        f.before_id,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Events per kind: `(kind, count)`.
#[tracing::instrument(skip_all)]
pub async fn counts(
    db: impl PgExecutor<'_>,
    f: Filter<'_>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let (tenant, platform) = f.scope_params();
    let rows = sqlx::query!(
        r#"select kind, count(*) as "count!" from security_events
         where ($1::uuid is null or tenant_id = $1) and (not $2 or tenant_id is null)
           and ($3::text is null or kind = $3) and ($4::uuid is null or user_id = $4)
           and ($5::timestamptz is null or created_at >= $5)
           and ($6::timestamptz is null or created_at < $6) and ($7::bigint is null or id < $7)
         group by kind order by kind"#,
        tenant,
        platform,
        f.kind,
        f.user_id.map(|u| u.0),
        f.since,
        f.until,
        f.before_id,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.kind, r.count)).collect())
}

/// Deletes up to `limit` events (across organisations) created before
/// `before`, oldest first; returns how many. Callers repeat it until it
/// deletes fewer than `limit`, so one run never holds a long lock.
#[tracing::instrument(skip_all)]
pub async fn prune(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "delete from security_events where id in (
            select id from security_events where created_at < $1
            order by created_at limit $2 for update skip locked)",
        before,
        limit,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
