-- An organisation's own request rate limits, replacing the platform's
-- defaults (jobs.toml `[rate_limits]`) for the classes it names.
create table rate_limit_overrides (
    tenant_id uuid not null references tenants (id) on delete cascade,
    class text not null check (class in ('send', 'read', 'write', 'upload')),
    per_sec double precision not null check (per_sec > 0 and per_sec <= 1000000),
    burst integer not null check (burst between 1 and 1000000),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, class)
);

-- How many notifications an organisation may send on a channel per UTC day
-- or calendar month. The counts themselves live in Redis, per period.
create table send_quotas (
    tenant_id uuid not null references tenants (id) on delete cascade,
    channel text not null check (channel in ('email', 'sms', 'push', 'whatsapp', 'inapp')),
    period text not null check (period in ('day', 'month')),
    quota bigint not null check (quota between 0 and 1000000000000),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, channel, period)
);
