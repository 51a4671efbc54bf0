-- Tenants, their API keys, notifications with their delivery attempts, the
-- audit log and the scheduler's cron ticks.

create or replace function set_updated_at() returns trigger
language plpgsql as $$
begin
    new.updated_at = now();
    return new;
end;
$$;

create table tenants (
    id uuid primary key,
    name text not null check (length(name) between 1 and 200),
    status text not null default 'active' check (status in ('active', 'suspended')),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create trigger tenants_updated_at before update on tenants
    for each row execute function set_updated_at();

-- Only a SHA-256 hash of each key is stored; the key itself is shown once.
create table api_keys (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    name text not null check (length(name) between 1 and 200),
    key_prefix text not null,
    key_hash bytea not null,
    last_used_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint api_keys_key_hash_key unique (key_hash)
);
create index api_keys_tenant_id_idx on api_keys (tenant_id);
create trigger api_keys_updated_at before update on api_keys
    for each row execute function set_updated_at();

-- One row per message to one recipient on one channel. The row is the unit of
-- work: the Redis job that carries it is only a wake-up call.
--
-- `run_at` is when the row is next due: for `queued` the earliest send time
-- (retries and delays live here), for `sending` the end of the claim's lease.
-- `dispatched_at` is when the row was last pushed to Redis; it is cleared
-- whenever the row becomes due again.
create table notifications (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    channel text not null check (channel in ('email')),
    recipient text not null,
    content jsonb not null,
    metadata jsonb not null default '{}'::jsonb,
    status text not null default 'queued'
        check (status in ('queued', 'sending', 'sent', 'failed')),
    attempts integer not null default 0 check (attempts >= 0),
    max_attempts integer not null check (max_attempts > 0),
    run_at timestamptz not null default now(),
    dispatched_at timestamptz,
    idempotency_key text check (length(idempotency_key) between 1 and 255),
    request_hash bytea,
    provider_message_id text,
    last_error text,
    sent_at timestamptz,
    content_redacted_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create unique index notifications_idempotency_key_idx
    on notifications (tenant_id, idempotency_key) where idempotency_key is not null;
-- The dispatcher's sweep: due rows of a channel.
create index notifications_due_idx
    on notifications (channel, run_at) where status in ('queued', 'sending');
create index notifications_tenant_created_idx on notifications (tenant_id, created_at);
create index notifications_retention_idx
    on notifications (updated_at) where status in ('sent', 'failed') and content_redacted_at is null;
create trigger notifications_updated_at before update on notifications
    for each row execute function set_updated_at();

create table delivery_attempts (
    id bigint generated always as identity primary key,
    tenant_id uuid not null references tenants (id),
    notification_id uuid not null references notifications (id) on delete cascade,
    attempt integer not null check (attempt > 0),
    outcome text not null check (outcome in ('sent', 'retry', 'failed')),
    provider text not null,
    provider_response text,
    error text,
    latency_ms integer not null check (latency_ms >= 0),
    worker text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index delivery_attempts_notification_idx on delivery_attempts (notification_id, attempt);
create trigger delivery_attempts_updated_at before update on delivery_attempts
    for each row execute function set_updated_at();

-- Append only: a trigger refuses updates and deletes for every role, so the
-- record of who did what cannot be rewritten by the application.
create table audit_log (
    id bigint generated always as identity primary key,
    tenant_id uuid references tenants (id),
    actor text not null,
    action text not null,
    resource_type text not null,
    resource_id text,
    result text not null check (result in ('success', 'failure')),
    request_id text,
    details jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index audit_log_tenant_created_idx on audit_log (tenant_id, created_at);

create or replace function audit_log_is_append_only() returns trigger
language plpgsql as $$
begin
    raise exception 'audit_log is append only' using errcode = 'insufficient_privilege';
end;
$$;
create trigger audit_log_append_only before update or delete on audit_log
    for each row execute function audit_log_is_append_only();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_log_is_append_only();

-- One row per fired cron tick. The primary key makes each tick fire once
-- across all scheduler replicas; `enqueued_at` stays null until its job is in
-- Redis, so the dispatcher can push it again.
create table cron_ticks (
    name text not null,
    scheduled_for timestamptz not null,
    job text not null,
    enqueued_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (name, scheduled_for)
);
create index cron_ticks_pending_idx on cron_ticks (scheduled_for) where enqueued_at is null;
create trigger cron_ticks_updated_at before update on cron_ticks
    for each row execute function set_updated_at();
