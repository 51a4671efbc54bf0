-- The notifications table and the inbox events are written a thousand rows
-- per statement, and Postgres checks each foreign key of each row on its
-- own (a lookup and a share lock of the referenced row per row): measured
-- on a 20,000-row chunk insert, the five checks took more time than the
-- insert and its four indexes together.
--
-- These references hold by construction, so their checks go:
--
-- * `tenant_id`: an organisation is never deleted (it is deactivated), and
--   every writer takes the id from the authenticated caller or from a row
--   of that organisation read in the same transaction. Row-level security
--   (`tenant_wall`) still confines every row to its organisation.
-- * `batch_id`, `broadcast_id`: batches and broadcasts are never deleted;
--   a batch's notifications are written by its chunk's expansion, which
--   holds the batch row (`for share`), and a broadcast's by the
--   transaction that creates it.
-- * `bulk_job_id`: a bulk job is deleted only while its file is still
--   uploading, before any of its rows becomes a notification.
--
-- `subscriber_id` keeps its key: a subscriber can be erased, and the check
-- is what holds an erasure back until a concurrent send that names the
-- subscriber has committed.
alter table notifications
    drop constraint notifications_tenant_id_fkey,
    drop constraint notifications_batch_id_fkey,
    drop constraint notifications_broadcast_id_fkey,
    drop constraint notifications_bulk_job_id_fkey;

alter table subscriber_events drop constraint subscriber_events_tenant_id_fkey;

-- Old events are found by time for pruning; a block-range index does that
-- for an append-only table at a fraction of a B-tree's cost per insert.
drop index subscriber_events_created_idx;
create index subscriber_events_created_idx on subscriber_events using brin (created_at);
