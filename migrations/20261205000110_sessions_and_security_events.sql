-- Sign-in sessions with rotating refresh tokens, failed-login throttling and
-- the security events organisation admins read.

-- One signed-in session (one refresh-token family). Access tokens carry its
-- id as `sid`; a revoked or expired session's tokens stop working.
create table auth_sessions (
    id uuid primary key,
    tenant_id uuid not null references tenants (id) on delete cascade,
    user_id uuid not null references users (id) on delete cascade,
    created_at timestamptz not null default now(),
    last_used_at timestamptz not null default now(),
    expires_at timestamptz not null,
    ip text check (length(ip) <= 64),
    user_agent text check (length(user_agent) <= 256),
    revoked_at timestamptz,
    revoked_reason text
);
create index auth_sessions_user on auth_sessions (user_id, created_at desc);

-- Refresh tokens, by the SHA-256 of the token (never the token). Each is used
-- once: refreshing marks it used and issues the next one of its session.
create table refresh_tokens (
    token_hash bytea primary key,
    session_id uuid not null references auth_sessions (id) on delete cascade,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    used_at timestamptz
);
create index refresh_tokens_session on refresh_tokens (session_id);

-- Failed sign-ins per key: `account:<sha256 of the normalised email>` (known
-- or not) and `ip:<address>`. Times come from the API's clock.
create table login_throttle (
    key text primary key check (length(key) <= 100),
    failures integer not null default 0,
    window_started_at timestamptz,
    last_failure_at timestamptz,
    next_attempt_at timestamptz,
    locked_until timestamptz,
    locks integer not null default 0,
    tenant_id uuid,
    user_id uuid
);
create index login_throttle_stale on login_throttle (last_failure_at);

-- Security events: sign-ins, lockouts, unlocks, refresh-token reuse and
-- session revocations. `tenant_id` is null for failed sign-ins with an
-- unknown address (the platform stream). Never a password or token; the IP
-- and user agent are truncated.
create table security_events (
    id bigserial primary key,
    tenant_id uuid references tenants (id) on delete cascade,
    kind text not null check (length(kind) <= 64),
    user_id uuid,
    session_id uuid,
    ip text check (length(ip) <= 64),
    user_agent text check (length(user_agent) <= 256),
    details jsonb not null default '{}',
    created_at timestamptz not null default now()
);
create index security_events_tenant on security_events (tenant_id, id desc);
create index security_events_tenant_kind on security_events (tenant_id, kind, id desc);
create index security_events_created on security_events (created_at);
