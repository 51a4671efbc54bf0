-- A notification or inbox event names its subscriber; the foreign keys that
-- held this checked it row by row: one lookup and one share lock of the
-- subscriber per inserted row, run as a trigger of its own. A batch chunk
-- inserts a thousand notifications and their events per statement, and
-- on a 1,000-row chunk of in-app notifications for new subscribers the
-- check was about a quarter of the insert's time.
--
-- The same guarantee, checked once per statement: after each insert, the
-- distinct subscribers the new rows name are looked up together, and those
-- this transaction did not itself write are share-locked (`for key share`,
-- as the foreign key's check did), so an erasure (which locks the
-- subscriber `for update`) waits until the insert's transaction ends and
-- then finds and detaches its rows. A subscriber this transaction created
-- or changed needs no lock: no other transaction can erase it first. A
-- statement that names a subscriber that does not exist, or one the
-- session cannot see (another organisation's, under the row-level wall),
-- fails with `foreign_key_violation` under the old constraint's name, as
-- the foreign key did.
--
-- Only inserts name a subscriber: an erasure sets `subscriber_id` to null
-- and nothing else changes it.
create function app_subscribers_exist() returns trigger
language plpgsql as $$
declare
    named bigint;
    found bigint;
begin
    select count(distinct subscriber_id) into named
    from new_rows where subscriber_id is not null;
    if named = 0 then
        return null;
    end if;
    with named as (
        select distinct subscriber_id as id from new_rows where subscriber_id is not null
    ), own as (
        select s.id from subscribers s join named n on n.id = s.id
        where s.xmin = pg_current_xact_id()::xid
    ), locked as (
        select s.id from subscribers s join named n on n.id = s.id
        where s.xmin <> pg_current_xact_id()::xid
        for key share of s
    )
    select (select count(*) from own) + (select count(*) from locked) into found;
    if found < named then
        raise foreign_key_violation using
            message = format('insert into %I names a subscriber that does not exist', tg_table_name),
            constraint = tg_table_name || '_subscriber_id_fkey';
    end if;
    return null;
end
$$;

alter table notifications drop constraint notifications_subscriber_id_fkey;
create trigger notifications_subscribers_exist after insert on notifications
    referencing new table as new_rows
    for each statement execute function app_subscribers_exist();

-- An erasure now deletes the subscriber's events itself (the key cascaded).
alter table subscriber_events drop constraint subscriber_events_subscriber_id_fkey;
create trigger subscriber_events_subscribers_exist after insert on subscriber_events
    referencing new table as new_rows
    for each statement execute function app_subscribers_exist();

-- Subscribers are created a chunk at a time for a batch's new recipients;
-- their organisation holds by construction, as the notifications' does
-- (organisations are never deleted, see 2026121300000002).
alter table subscribers drop constraint subscribers_tenant_id_fkey;
