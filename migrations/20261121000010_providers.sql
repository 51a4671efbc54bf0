-- Each organisation's delivery providers per channel, tried in `priority`
-- order (failover). Credentials are sealed with AES-256-GCM: `key_id` names
-- the key, and the tenant and provider ids are bound in as associated data, so
-- a ciphertext copied to another row does not open. `masked` holds what the
-- API may show of each secret (its last characters).
create table provider_configs (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    channel text not null check (channel in ('email', 'sms', 'push', 'whatsapp')),
    provider text not null check (provider in ('smtp', 'sendgrid', 'twilio', 'fcm', 'whatsapp')),
    name text not null check (length(name) between 1 and 100),
    priority integer not null check (priority between 0 and 1000),
    enabled boolean not null default true,
    settings jsonb not null default '{}'::jsonb,
    key_id text,
    ciphertext bytea,
    masked jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint provider_configs_tenant_name_key unique (tenant_id, name),
    constraint provider_configs_sealed check ((key_id is null) = (ciphertext is null))
);
create index provider_configs_tenant_channel_idx on provider_configs (tenant_id, channel, priority);
create trigger provider_configs_updated_at before update on provider_configs
    for each row execute function set_updated_at();

-- What each try reported: the provider's status code (HTTP status or SMTP
-- reply code), beside the latency and error already recorded.
alter table delivery_attempts add column response_code integer;

-- A provider that failed (or was skipped) before the send moved on to the
-- next provider is recorded as a `failover` row of the same attempt.
alter table delivery_attempts drop constraint delivery_attempts_outcome_check;
alter table delivery_attempts add constraint delivery_attempts_outcome_check
    check (outcome in ('sent', 'retry', 'failed', 'suppressed', 'failover'));
