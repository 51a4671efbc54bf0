-- Per organisation, minute, channel and provider: the sends each provider
-- took and the attempts it failed (failovers included), added up by the
-- workers once a second like `queue_minutes`. Alert rules read it for one
-- provider's failure rate; kept as long as `queue_minutes` (8 days).
create table provider_minutes (
    tenant_id uuid not null,
    minute timestamptz not null,
    channel text not null,
    provider text not null,
    sent bigint not null default 0 check (sent >= 0),
    failed bigint not null default 0 check (failed >= 0),
    primary key (tenant_id, minute, channel, provider)
);
-- Pruning by age.
create index provider_minutes_minute_idx on provider_minutes (minute);
