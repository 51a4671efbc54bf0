-- Two statement-level triggers on `notifications` were planned on every
-- statement: the subscriber check (EXECUTE, 2026121500000005) and the
-- delivery-report insert trigger (force_custom_plan, 20261208000100). A
-- thousand-row chunk hardly notices, but a shared accept of a few sends
-- does: with pg_stat_statements tracking nested statements, 20,000
-- templated in-app sends (about eight a statement) spent 4.0 s planning
-- the subscriber check and 0.8 s running it.
--
-- The check is a static query again, so PL/pgSQL keeps its plan, and the
-- function runs with sequential scans, hash joins and merge joins off: the
-- only plan left probes the primary key of `subscribers` once per named
-- subscriber, which is the right plan at any table size and cannot turn
-- into the full scan a plan made while the table was small would keep
-- (the reason for EXECUTE). The guarantee is unchanged (2026121500000003).
create or replace function app_subscribers_exist() returns trigger
language plpgsql
set enable_seqscan = off
set enable_hashjoin = off
set enable_mergejoin = off
as $$
declare
    named bigint;
    found bigint;
begin
    with named as (
        select distinct subscriber_id as id from new_rows where subscriber_id is not null
    ), seen as (
        select s.id, s.xmin = pg_current_xact_id()::xid as own
        from subscribers s join named n on n.id = s.id
    ), locked as (
        select s.id from subscribers s
        where s.id in (select id from seen where not own)
        for key share of s
    )
    select (select count(*) from named),
           (select count(*) from seen where own) + (select count(*) from locked)
    into named, found;
    if found < named then
        raise foreign_key_violation using
            message = format('insert into %I names a subscriber that does not exist', tg_table_name),
            constraint = tg_table_name || '_subscriber_id_fkey';
    end if;
    return null;
end
$$;

-- The insert trigger reads only the inserted rows (no join of old and new
-- rows, which is what made a kept plan quadratic for the update trigger):
-- its aggregate is linear whatever size it was planned for.
alter function delivery_deltas_of_insert() reset plan_cache_mode;
