-- The per-statement subscriber check (2026121400000001) looked every named
-- subscriber up twice: once for those this transaction wrote itself, once
-- to lock the others. A batch chunk for new recipients creates its
-- subscribers in the transaction that inserts their notifications and
-- inbox events, so the second lookup found nothing, for a thousand index
-- probes a statement, twice a chunk. Now each named subscriber is looked
-- up once, and only those another transaction wrote are looked up again
-- to be locked. The guarantee is unchanged: an unknown or invisible
-- subscriber fails the statement with `foreign_key_violation` under the
-- old constraint's name; one this transaction did not write is
-- share-locked (`for key share`) until it ends; one erased meanwhile is
-- not found when locked, and fails the statement.
create or replace function app_subscribers_exist() returns trigger
language plpgsql as $$
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
