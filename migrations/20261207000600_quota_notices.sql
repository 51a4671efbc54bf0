-- The `quota.warning` and `quota.exceeded` webhook events.
alter table webhook_endpoints drop constraint webhook_endpoints_events_check;
alter table webhook_endpoints add constraint webhook_endpoints_events_check check (
    cardinality(events) between 1 and 9
    and events <@ array['notification.sent', 'notification.delivered', 'notification.failed',
                        'notification.bounced', 'notification.read', 'notification.suppressed',
                        'shipment.updated', 'quota.warning', 'quota.exceeded']::text[]
);
alter table webhook_deliveries drop constraint webhook_deliveries_event_check;
alter table webhook_deliveries add constraint webhook_deliveries_event_check
    check (event in ('notification.sent', 'notification.delivered', 'notification.failed',
                     'notification.bounced', 'notification.read', 'notification.suppressed',
                     'shipment.updated', 'quota.warning', 'quota.exceeded'));

-- One row per organisation, quota, period and kind of notice: the API
-- inserts it with the notice's webhook deliveries, in one transaction, and
-- only the replica whose insert lands queues them, so each notice goes out
-- once per period however many replicas count sends.
create table quota_notices (
    tenant_id uuid not null references tenants (id) on delete cascade,
    channel text not null check (length(channel) <= 32),
    period text not null check (period in ('day', 'month')),
    period_start date not null,
    kind text not null check (kind in ('warning', 'exceeded')),
    quota bigint not null,
    used bigint not null,
    created_at timestamptz not null default now(),
    primary key (tenant_id, channel, period, period_start, kind)
);
