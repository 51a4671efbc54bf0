-- New inbox entries are announced by one stored event row per subscriber
-- and placement instead of one per entry plus one for the unread count.
--
-- A placement of n entries takes the subscriber's event numbers seq ..
-- seq + n: n `notification.created` events and then one
-- `unread_count.changed`. It is kept as one row of kind `inbox.placed`
-- whose `last_seq` is seq + n and whose payload holds the entries' ids and
-- the unread count after them; a reconnecting client's replay rebuilds the
-- n + 1 events from it and the notifications it names. The row is small (no
-- copy of each message's content) and is one heap tuple and two index
-- entries where there were n + 1 of each.
alter table subscriber_events add column last_seq bigint;
alter table subscriber_events add constraint subscriber_events_last_seq_check
    check (last_seq is null or (kind = 'inbox.placed' and last_seq > seq));

-- A subscriber's event number moves on with every inbox change; room on
-- each page lets Postgres write that as a HOT update (`event_seq` is in no
-- index). Applies to pages written from now on.
alter table subscribers set (fillfactor = 90);
