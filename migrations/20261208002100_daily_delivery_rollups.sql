-- Daily delivery rollups beside the hourly ones, and per-hour totals of
-- each organisation, so a report of whole days reads a row per key and day
-- (31 per key for a month, not 744), and its busiest hours a row per hour.
--
-- Both are kept by the same fold as `delivery_hours`
-- (`shared::reports::rollup::fold`), in the same statement, so the three
-- always count the same deltas. Days are UTC days (`date_trunc('day',
-- hour, 'UTC')`), as a report's `days` are.
--
-- Retention (`shared::reports::rollup::prune`, run by the scheduler's
-- reporting task about once an hour): hourly rows and hour totals are kept
-- 90 days, daily rows 800 days (the longest custom range, 366 days, and
-- the previous period it is compared with, with a month to spare).
--
-- The existing hours are added up into both here. The hours are locked
-- while they are read, so no fold is lost in between; schedulers of the
-- previous version must be stopped before this migration runs (they would
-- fold into the hours only).

create table delivery_days (
    tenant_id uuid not null references tenants (id) on delete cascade,
    day timestamptz not null,
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
    primary key (tenant_id, day, channel, provider, template, category)
);
-- Platform-wide reports and pruning read days across organisations.
create index delivery_days_day_idx on delivery_days (day);
create trigger delivery_days_updated_at before update on delivery_days
    for each row execute function set_updated_at();

create table delivery_hour_totals (
    tenant_id uuid not null references tenants (id) on delete cascade,
    hour timestamptz not null,
    accepted bigint not null default 0,
    sent bigint not null default 0,
    delivered bigint not null default 0,
    failed bigint not null default 0,
    bounced bigint not null default 0,
    read bigint not null default 0,
    primary key (tenant_id, hour)
);
create index delivery_hour_totals_hour_idx on delivery_hour_totals (hour);

lock table delivery_hours in share row exclusive mode;

insert into delivery_days (tenant_id, day, channel, provider, template, category,
                           accepted, sent, delivered, failed, bounced, read, latency_ms)
select tenant_id, date_trunc('day', hour, 'UTC'), channel, provider, template, category,
       sum(accepted), sum(sent), sum(delivered), sum(failed), sum(bounced), sum(read),
       array[sum(latency_ms[1]), sum(latency_ms[2]), sum(latency_ms[3]), sum(latency_ms[4]), sum(latency_ms[5]), sum(latency_ms[6]), sum(latency_ms[7]), sum(latency_ms[8]), sum(latency_ms[9]), sum(latency_ms[10]), sum(latency_ms[11]), sum(latency_ms[12]), sum(latency_ms[13]), sum(latency_ms[14]), sum(latency_ms[15]), sum(latency_ms[16]), sum(latency_ms[17]), sum(latency_ms[18]), sum(latency_ms[19])]::bigint[]
from delivery_hours
group by 1, 2, 3, 4, 5, 6;

insert into delivery_hour_totals (tenant_id, hour, accepted, sent, delivered, failed, bounced, read)
select tenant_id, hour, sum(accepted), sum(sent), sum(delivered), sum(failed), sum(bounced), sum(read)
from delivery_hours
group by 1, 2;
