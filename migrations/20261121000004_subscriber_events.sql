-- Real-time events of each subscriber, numbered per subscriber. A client that
-- reconnects with `since=<id>` is sent every event after it that is still
-- kept. `event_seq` is the last number given; taking the next one locks the
-- subscriber row, which also orders concurrent changes to their inbox.
alter table subscribers add column event_seq bigint not null default 0;

create table subscriber_events (
    subscriber_id uuid not null references subscribers (id) on delete cascade,
    seq bigint not null,
    tenant_id uuid not null references tenants (id),
    kind text not null,
    payload jsonb not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (subscriber_id, seq)
);
create index subscriber_events_created_idx on subscriber_events (created_at);
