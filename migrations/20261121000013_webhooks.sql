-- Organisations' own HTTPS endpoints that hear about their notifications'
-- delivery, and the signed deliveries to them.
--
-- The signing secret is sealed with AES-256-GCM: `key_id` names the key, and
-- the tenant and endpoint ids are bound in as associated data, so a
-- ciphertext copied to another row does not open.
create table webhook_endpoints (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    url text not null check (length(url) between 1 and 2048),
    description text not null default '' check (length(description) <= 500),
    events text[] not null check (
        cardinality(events) between 1 and 6
        and events <@ array['notification.sent', 'notification.delivered', 'notification.failed',
                            'notification.bounced', 'notification.read', 'notification.suppressed']::text[]
    ),
    key_id text not null,
    secret_ciphertext bytea not null,
    enabled boolean not null default true,
    disabled_reason text,
    -- Deliveries in a row that failed after their last attempt; reset by a
    -- delivered one.
    consecutive_failures integer not null default 0 check (consecutive_failures >= 0),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index webhook_endpoints_tenant_idx on webhook_endpoints (tenant_id, created_at);
create trigger webhook_endpoints_updated_at before update on webhook_endpoints
    for each row execute function set_updated_at();

-- One row per event per endpoint: the unit of work of the `webhook` queue,
-- claimed before the HTTP call exactly like a notification before its send.
-- `payload` is the JSON body, fixed when the event happened; it carries ids
-- and statuses only, never message content or recipients.
create table webhook_deliveries (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    endpoint_id uuid not null references webhook_endpoints (id) on delete cascade,
    event text not null check (event in ('notification.sent', 'notification.delivered', 'notification.failed',
                                         'notification.bounced', 'notification.read', 'notification.suppressed')),
    notification_id uuid,
    status text not null default 'queued' check (status in ('queued', 'sending', 'delivered', 'failed')),
    attempts integer not null default 0 check (attempts >= 0),
    max_attempts integer not null check (max_attempts > 0),
    run_at timestamptz not null default now(),
    dispatched_at timestamptz,
    last_status_code integer,
    last_error text,
    payload jsonb not null,
    delivered_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
-- The dispatcher's sweep and lease recovery.
create index webhook_deliveries_due_idx on webhook_deliveries (run_at) where status in ('queued', 'sending');
-- An endpoint's recent deliveries.
create index webhook_deliveries_endpoint_idx on webhook_deliveries (tenant_id, endpoint_id, created_at desc);
create trigger webhook_deliveries_updated_at before update on webhook_deliveries
    for each row execute function set_updated_at();
