-- Shipments an organisation tracks with UPS, and the carrier's events.
--
-- `created_by` and `assigned_to` are user references as text (a JWT subject,
-- or `api_key:<id>` for a machine caller), not foreign keys: users live at the
-- identity provider. Polling state: `next_poll_at` is when the shipment is
-- next due (null once final), `claimed_for` the cron tick (or refresh) that
-- claimed it, so one tick polls a shipment at most once.
create table shipments (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    carrier text not null default 'ups' check (carrier = 'ups'),
    tracking_number text not null check (length(tracking_number) between 8 and 40),
    reference text check (length(reference) <= 255),
    status text not null default 'pending' check (status in (
        'pending', 'label_created', 'in_transit', 'out_for_delivery', 'delivered', 'exception', 'returned')),
    eta timestamptz,
    last_event jsonb,
    last_polled_at timestamptz,
    status_changed_at timestamptz,
    next_poll_at timestamptz,
    claimed_for timestamptz,
    poll_failures integer not null default 0 check (poll_failures >= 0),
    last_error text,
    created_by text not null check (length(created_by) between 1 and 255),
    assigned_to text check (length(assigned_to) between 1 and 255),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint shipments_tenant_tracking_key unique (tenant_id, carrier, tracking_number)
);
create index shipments_tenant_status_idx on shipments (tenant_id, status, id);
-- The poll sweep: due, not final.
create index shipments_due_idx on shipments (next_poll_at) where next_poll_at is not null;
create trigger shipments_updated_at before update on shipments
    for each row execute function set_updated_at();

-- The carrier's activity, each appended once: UPS repeats the whole history
-- in every answer.
create table shipment_events (
    id bigint generated always as identity primary key,
    tenant_id uuid not null references tenants (id),
    shipment_id uuid not null references shipments (id) on delete cascade,
    occurred_at timestamptz not null,
    status text not null,
    status_type text not null,
    status_code text not null default '',
    description text not null default '',
    location text not null default '',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint shipment_events_once unique (shipment_id, occurred_at, status_code, location)
);
create index shipment_events_shipment_idx on shipment_events (tenant_id, shipment_id, occurred_at desc);
create trigger shipment_events_updated_at before update on shipment_events
    for each row execute function set_updated_at();

-- UPS credentials are a provider config of their own kind (tracking, not a
-- delivery channel).
alter table provider_configs drop constraint provider_configs_channel_check;
alter table provider_configs add constraint provider_configs_channel_check
    check (channel in ('email', 'sms', 'push', 'whatsapp', 'tracking'));
alter table provider_configs drop constraint provider_configs_provider_check;
alter table provider_configs add constraint provider_configs_provider_check
    check (provider in ('smtp', 'sendgrid', 'twilio', 'fcm', 'whatsapp', 'ups'));

-- The `shipment.updated` webhook event.
alter table webhook_endpoints drop constraint webhook_endpoints_events_check;
alter table webhook_endpoints add constraint webhook_endpoints_events_check check (
    cardinality(events) between 1 and 7
    and events <@ array['notification.sent', 'notification.delivered', 'notification.failed',
                        'notification.bounced', 'notification.read', 'notification.suppressed',
                        'shipment.updated']::text[]
);
alter table webhook_deliveries drop constraint webhook_deliveries_event_check;
alter table webhook_deliveries add constraint webhook_deliveries_event_check
    check (event in ('notification.sent', 'notification.delivered', 'notification.failed',
                     'notification.bounced', 'notification.read', 'notification.suppressed',
                     'shipment.updated'));
