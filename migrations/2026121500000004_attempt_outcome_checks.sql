-- Recording a send's outcome (one statement per group of sends: the
-- notifications move on and their `delivery_attempts` rows are inserted)
-- spent more time in the attempt rows' checks than in the writes:
--
-- * `delivery_attempts.tenant_id` referenced `tenants`: a lookup and a
--   share lock of the organisation's row for every attempt, every worker
--   of the organisation locking the same row. It goes, as the same key
--   went from notifications in 2026121300000002: an organisation is never
--   deleted, every attempt's organisation is its notification's, and
--   row-level security still confines the row.
-- * The error-tracking trigger looked up, for every `sent` attempt, its
--   notification (for the channel) and then the earlier failed attempts
--   of it, to count a recovery; almost every send has none. It now finds
--   the earlier failures first and reads the notification only for those.
--   Counted the same: one recovery per notification and error group, with
--   the number of failures before it.
alter table delivery_attempts drop constraint delivery_attempts_tenant_id_fkey;

create or replace function delivery_attempts_errors() returns trigger
language plpgsql
set plan_cache_mode = force_custom_plan
as $$
begin
    perform record_errors(
        array_agg('delivery'::text), array_agg(notification_error_class(a.error)),
        array_agg(a.provider), array_agg(n.channel), array_agg(null::text),
        array_agg(a.tenant_id), array_agg(a.notification_id::text), array_agg(1::bigint),
        array_agg(a.created_at))
    from added a join notifications n on n.id = a.notification_id
    where a.outcome in ('retry', 'failed', 'failover')
    having count(*) > 0;

    with failed_before as materialized (
        select s.tenant_id, s.notification_id, s.created_at, f.error, f.provider
        from added s
        join delivery_attempts f
          on f.notification_id = s.notification_id and f.id < s.id
         and f.outcome in ('retry', 'failed', 'failover')
        where s.outcome = 'sent'
    ), recovered as (
        select error_group_id('delivery', notification_error_class(b.error), b.provider,
                              n.channel, null) as group_id,
               b.tenant_id, b.notification_id, count(*) as failures, max(b.created_at) as at
        from failed_before b
        join notifications n on n.id = b.notification_id
        group by 1, 2, 3
    ), listed as (
        insert into error_recoveries (group_id, tenant_id, notification_id, failures, recovered_at)
        select r.group_id, r.tenant_id, r.notification_id, r.failures, r.at
        from recovered r join error_groups g on g.id = r.group_id
        returning group_id, tenant_id, recovered_at
    ), per as (
        select group_id, tenant_id, count(*) as n, max(recovered_at) as at
        from listed group by 1, 2
    ), counted as (
        update error_group_tenants t
        set recoveries = t.recoveries + per.n,
            last_recovered_at = greatest(t.last_recovered_at, per.at)
        from per where t.group_id = per.group_id and t.tenant_id = per.tenant_id
        returning 1
    )
    insert into error_hours as h (group_id, tenant_id, hour, recoveries)
    select group_id, tenant_id, date_trunc('hour', recovered_at), count(*)
    from listed group by 1, 2, 3 order by 1, 2, 3
    on conflict (group_id, tenant_id, hour) do update
    set recoveries = h.recoveries + excluded.recoveries;
    return null;
end;
$$;
