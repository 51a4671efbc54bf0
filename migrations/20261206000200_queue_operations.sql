-- Queues an operator paused. While a queue is here the dispatcher does not
-- feed it, producers leave its work in Postgres and workers hand back what
-- they fetch; the API still accepts. The scheduler mirrors this table into
-- Redis (`{prefix}:paused`) on every sweep, where every process reads it.
create table queue_pauses (
    queue text primary key check (length(queue) between 1 and 64),
    paused_at timestamptz not null default now(),
    paused_by text not null,
    reason text check (length(reason) <= 500)
);

-- Per-minute throughput per queue and organisation, kept as work completes
-- (each process adds what it did every second), so the operators' charts
-- never scan notifications. `duration_ms` and `latency_ms` are counts per
-- bucket of a fixed log-spaced histogram (see shared::throughput::BOUNDS_MS):
-- how long one job or attempt took, and how long from accepted to sent.
-- Work of no organisation (housekeeping) is kept under the nil uuid.
create table queue_minutes (
    queue text not null,
    minute timestamptz not null,
    tenant_id uuid not null,
    sent bigint not null default 0,
    failed bigint not null default 0,
    retried bigint not null default 0,
    duration_ms bigint[] not null,
    latency_ms bigint[] not null,
    primary key (queue, minute, tenant_id)
);
create index queue_minutes_minute_idx on queue_minutes (minute);
