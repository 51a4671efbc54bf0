-- Delivery analytics: hourly rollups per organisation, channel, provider,
-- template and category, kept up to date by the statements that write
-- notifications, and the organisations' scheduled reports.
--
-- Every statement that inserts or updates notifications adds, through a
-- statement-level trigger, a few aggregated rows to `delivery_deltas` (one
-- per key and hour it touched, not one per notification). Inserting only,
-- it takes no lock another writer waits for. The scheduler folds the deltas
-- into `delivery_hours` about once a second in one statement
-- (`shared::reports::rollup::fold`); two schedulers folding at once take
-- disjoint rows (`for update skip locked`), so every delta counts once.
--
-- Events count in the hour they happened: accepted at `created_at`, sent at
-- `sent_at` (with its accepted-to-sent latency), delivered at
-- `delivered_at`, read at `read_at`, failed and bounced when the status
-- became so. The provider is known once a send was attempted: accepted
-- counts carry the provider '' (none yet); in-app sends carry `inbox`.
-- `template`, `category` and `provider` are '' when there is none.
--
-- Latencies are counts per bucket of the histogram of
-- `shared/src/throughput.rs` (`BOUNDS_MS`, 19 buckets).

alter table notifications add column template_key text check (length(template_key) <= 200);

-- The histogram bucket of a latency in whole milliseconds: how many bounds
-- it exceeds (`width_bucket` counts the bounds at or below its operand, so
-- half a millisecond less makes it strict for whole numbers). A built-in
-- call, not a subquery: it runs for every row a statement sends.
create function delivery_latency_bucket(ms double precision) returns integer
    language sql immutable parallel safe
    as $$ select width_bucket(ms - 0.5, '{1,2,5,10,20,50,100,200,500,1000,2000,5000,10000,30000,60000,300000,900000,3600000}'::double precision[]) $$;

create table delivery_deltas (
    id bigint generated always as identity primary key,
    tenant_id uuid not null,
    hour timestamptz not null,
    channel text not null,
    provider text not null,
    template text not null,
    category text not null,
    accepted bigint not null default 0,
    sent bigint not null default 0,
    delivered bigint not null default 0,
    failed bigint not null default 0,
    bounced bigint not null default 0,
    read bigint not null default 0,
    latency_ms bigint[] not null,
    created_at timestamptz not null default now()
);

create table delivery_hours (
    tenant_id uuid not null references tenants (id) on delete cascade,
    hour timestamptz not null,
    channel text not null,
    provider text not null,
    template text not null,
    category text not null,
    accepted bigint not null default 0,
    sent bigint not null default 0,
    delivered bigint not null default 0,
    failed bigint not null default 0,
    bounced bigint not null default 0,
    read bigint not null default 0,
    latency_ms bigint[] not null check (cardinality(latency_ms) = 19),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, hour, channel, provider, template, category)
);
-- Platform-wide reports read every organisation's hours of a range.
create index delivery_hours_hour_idx on delivery_hours (hour);
create trigger delivery_hours_updated_at before update on delivery_hours
    for each row execute function set_updated_at();

-- Where the triggers' counting starts: the backfill
-- (`shared::reports::rollup::backfill`) counts the events before it from
-- the notifications themselves, once.
create table delivery_rollup_state (
    id boolean primary key default true check (id),
    counting_since timestamptz not null,
    backfilled_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
insert into delivery_rollup_state (counting_since) values (now());
create trigger delivery_rollup_state_updated_at before update on delivery_rollup_state
    for each row execute function set_updated_at();

create function delivery_deltas_of_insert() returns trigger language plpgsql as $$
begin
    insert into delivery_deltas (tenant_id, hour, channel, provider, template, category,
                                 accepted, sent, latency_ms)
    select tenant_id, hour, channel, provider, template, category,
           sum(accepted), sum(sent),
           array[count(*) filter (where sent = 1 and lb = 0), count(*) filter (where sent = 1 and lb = 1), count(*) filter (where sent = 1 and lb = 2), count(*) filter (where sent = 1 and lb = 3), count(*) filter (where sent = 1 and lb = 4), count(*) filter (where sent = 1 and lb = 5), count(*) filter (where sent = 1 and lb = 6), count(*) filter (where sent = 1 and lb = 7), count(*) filter (where sent = 1 and lb = 8), count(*) filter (where sent = 1 and lb = 9), count(*) filter (where sent = 1 and lb = 10), count(*) filter (where sent = 1 and lb = 11), count(*) filter (where sent = 1 and lb = 12), count(*) filter (where sent = 1 and lb = 13), count(*) filter (where sent = 1 and lb = 14), count(*) filter (where sent = 1 and lb = 15), count(*) filter (where sent = 1 and lb = 16), count(*) filter (where sent = 1 and lb = 17), count(*) filter (where sent = 1 and lb = 18)]::bigint[]
    from (
        select n.tenant_id, date_trunc('hour', n.created_at, 'UTC') as hour, n.channel, '' as provider,
               coalesce(n.template_key, '') as template, coalesce(n.category, '') as category,
               1 as accepted, 0 as sent, -1 as lb
        from new_rows n
        union all
        select n.tenant_id, date_trunc('hour', n.sent_at, 'UTC'), n.channel,
               case when n.channel = 'inapp' then 'inbox' else '' end,
               coalesce(n.template_key, ''), coalesce(n.category, ''), 0, 1,
               delivery_latency_bucket(floor(extract(epoch from n.sent_at - n.created_at) * 1000))
        from new_rows n
        where n.sent_at is not null
    ) e
    group by tenant_id, hour, channel, provider, template, category;
    return null;
end $$;

create function delivery_deltas_of_update() returns trigger language plpgsql as $$
begin
    insert into delivery_deltas (tenant_id, hour, channel, provider, template, category,
                                 sent, delivered, failed, bounced, read, latency_ms)
    select tenant_id, hour, channel, provider, template, category,
           count(*) filter (where kind = 'sent'), count(*) filter (where kind = 'delivered'),
           count(*) filter (where kind = 'failed'), count(*) filter (where kind = 'bounced'),
           count(*) filter (where kind = 'read'),
           array[count(*) filter (where kind = 'sent' and lb = 0), count(*) filter (where kind = 'sent' and lb = 1), count(*) filter (where kind = 'sent' and lb = 2), count(*) filter (where kind = 'sent' and lb = 3), count(*) filter (where kind = 'sent' and lb = 4), count(*) filter (where kind = 'sent' and lb = 5), count(*) filter (where kind = 'sent' and lb = 6), count(*) filter (where kind = 'sent' and lb = 7), count(*) filter (where kind = 'sent' and lb = 8), count(*) filter (where kind = 'sent' and lb = 9), count(*) filter (where kind = 'sent' and lb = 10), count(*) filter (where kind = 'sent' and lb = 11), count(*) filter (where kind = 'sent' and lb = 12), count(*) filter (where kind = 'sent' and lb = 13), count(*) filter (where kind = 'sent' and lb = 14), count(*) filter (where kind = 'sent' and lb = 15), count(*) filter (where kind = 'sent' and lb = 16), count(*) filter (where kind = 'sent' and lb = 17), count(*) filter (where kind = 'sent' and lb = 18)]::bigint[]
    from (
        select c.tenant_id, date_trunc('hour', c.at, 'UTC') as hour, c.channel,
               case when c.channel = 'inapp' then 'inbox'
                    else coalesce((select a.provider from delivery_attempts a
                                   where a.notification_id = c.id
                                   order by a.attempt desc limit 1), c.failed_provider, '')
               end as provider,
               c.template, c.category, c.kind, c.lb
        from (
            select n.id, n.tenant_id, n.channel, n.failed_provider,
                   coalesce(n.template_key, '') as template, coalesce(n.category, '') as category,
                   e.kind, e.at,
                   case when e.kind = 'sent'
                        then delivery_latency_bucket(floor(extract(epoch from n.sent_at - n.created_at) * 1000))
                        else -1 end as lb
            from new_rows n
            join old_rows o on o.id = n.id
            cross join lateral (values
                ('sent', n.sent_at, o.sent_at is null and n.sent_at is not null),
                ('delivered', n.delivered_at, o.delivered_at is null and n.delivered_at is not null),
                ('read', n.read_at, o.read_at is null and n.read_at is not null),
                ('failed', coalesce(n.failed_at, now()), n.status = 'failed' and o.status <> 'failed'),
                ('bounced', coalesce(n.failed_at, now()), n.status = 'bounced' and o.status <> 'bounced')
            ) as e(kind, at, happened)
            where e.happened
        ) c
    ) e
    group by tenant_id, hour, channel, provider, template, category;
    return null;
end $$;

create trigger notifications_delivery_deltas_insert after insert on notifications
    referencing new table as new_rows
    for each statement execute function delivery_deltas_of_insert();
create trigger notifications_delivery_deltas_update after update on notifications
    referencing old table as old_rows new table as new_rows
    for each statement execute function delivery_deltas_of_update();

-- Reports an organisation's admins have sent by email on a cron schedule.
-- `next_run_at` is the next firing; the scheduler that locks a due row
-- (`for update skip locked`) sends it and moves `next_run_at` on in the
-- same transaction, so each firing sends once however many schedulers run.
create table report_schedules (
    id uuid primary key,
    tenant_id uuid not null references tenants (id) on delete cascade,
    name text not null check (length(name) between 1 and 200),
    template text not null
        check (template in ('daily_summary', 'weekly_performance', 'monthly_comprehensive')),
    format text not null check (format in ('json', 'csv')),
    cron text not null check (length(cron) <= 200),
    timezone text not null check (length(timezone) <= 64),
    recipients uuid[] not null check (cardinality(recipients) between 1 and 50),
    enabled boolean not null default true,
    next_run_at timestamptz,
    last_run_for timestamptz,
    last_notification_ids uuid[] not null default '{}',
    created_by text not null check (length(created_by) <= 200),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index report_schedules_tenant_idx on report_schedules (tenant_id, created_at, id);
create index report_schedules_due_idx on report_schedules (next_run_at) where enabled;
create trigger report_schedules_updated_at before update on report_schedules
    for each row execute function set_updated_at();
