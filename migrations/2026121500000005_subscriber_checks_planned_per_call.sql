-- The per-statement subscriber check (2026121400000001, 2026121500000003)
-- kept the plan its query got on its first run in a session: the query
-- names no variable, so PL/pgSQL plans it once per connection and reuses
-- that plan until the table's statistics change. A connection that ran it
-- first while `subscribers` was small (a new organisation, a fresh
-- deployment, a table whose statistics autovacuum has not gathered yet)
-- kept a sequential scan of every subscriber for each checked statement:
-- measured at a million subscribers, 2,814 full scans (777 million rows
-- read) while a million-recipient batch was placed, about 250 ms on each
-- thousand-row chunk's notification insert and again on its inbox events
-- insert. The query now runs through EXECUTE, planned on every call for the
-- table as it is (a few tenths of a millisecond, once per statement).
create or replace function app_subscribers_exist() returns trigger
language plpgsql as $$
declare
    named bigint;
    found bigint;
begin
    execute $q$
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
    $q$ into named, found;
    if found < named then
        raise foreign_key_violation using
            message = format('insert into %I names a subscriber that does not exist', tg_table_name),
            constraint = tg_table_name || '_subscriber_id_fkey';
    end if;
    return null;
end
$$;
