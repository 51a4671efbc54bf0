-- A leaner notification store: fewer index entries per new notification,
-- and status changes that Postgres can write as HOT updates (a new row
-- version on the same page, no new index entries).
--
-- Postgres 15 writes an update HOT only when no column any index names —
-- in its keys or in its WHERE — changes value, and there is room on the
-- page. Every update sets `updated_at`, and most change `status`, which the
-- due, failed, retention, inbox, batch, bulk and broadcast indexes named, so
-- no update of a notification was HOT. Now:
--
-- * `stage`, computed by Postgres from the status (and, for in-app
--   messages, whether they sit in an inbox), is what the partial indexes
--   filter on: 1 waiting (queued, deferred, sending), 2 failed (failed,
--   bounced), 0 in an inbox (in-app, sent, not deleted), 3 any other final
--   state. A change between two statuses of the same stage (sent →
--   delivered → read, a message read or archived in its inbox) leaves every
--   indexed value as it was.
-- * The retention sweep's index is keyed on `created_at` (never changed)
--   instead of `updated_at`; the sweep asks for both below its cutoff
--   (`updated_at` is never before `created_at`).
-- * The inbox index and the subscriber index become one, over all of a
--   subscriber's notifications, newest first: the inbox reads it with its
--   filters, the subscriber erasure and the foreign key use its first
--   column.
-- * The batch listing index keeps its order (batch, id) without the
--   status; the bulk status index goes (the unique (job, row, channel)
--   index serves every per-job query); the broadcast index keeps only the
--   broadcast.
-- * `notifications_tenant_created_idx` goes: no query reads notifications
--   by organisation and creation time.
-- * In-app messages carry `inapp:<id>` as their message id, which no
--   provider callback looks up: the message-id index skips them.
-- * Pages are filled to 90%, leaving room for the updated row versions.
--
-- Adding the stored `stage` rewrites the table once (under an exclusive
-- lock), which also applies the fill factor to every page.

drop index notifications_due_idx;
drop index notifications_failed_idx;
drop index notifications_failed_tenant_idx;
drop index notifications_retention_idx;
drop index notifications_inbox_idx;
drop index notifications_subscriber_idx;
drop index notifications_batch_status_idx;
drop index notifications_bulk_status_idx;
drop index notifications_broadcast_idx;
drop index notifications_tenant_created_idx;
drop index notifications_provider_message_idx;

alter table notifications set (fillfactor = 90);

alter table notifications add column stage smallint not null generated always as (
    case
        when status in ('queued', 'deferred', 'sending') then 1
        when status in ('failed', 'bounced') then 2
        when channel = 'inapp' and status = 'sent' and deleted_at is null then 0
        else 3
    end) stored;

-- Due work per channel, oldest first (dispatcher, lease recovery, queue overview).
create index notifications_due_idx on notifications (channel, run_at) where stage = 1;
-- The failed lists: across organisations by time, and one organisation's.
create index notifications_failed_idx on notifications (failed_at, id)
    where stage = 2 and discarded_at is null;
create index notifications_failed_tenant_idx on notifications (tenant_id, failed_at, id)
    where stage = 2 and discarded_at is null;
-- Finished notifications whose content the retention sweep has not yet
-- erased, oldest first; messages still in an inbox are kept.
create index notifications_retention_idx on notifications (created_at)
    where stage in (2, 3) and content_redacted_at is null;
-- A subscriber's notifications, newest first (also the inbox cursor order).
create index notifications_subscriber_idx on notifications (subscriber_id, created_at desc, id desc)
    where subscriber_id is not null;
create index notifications_batch_idx on notifications (batch_id, id) where batch_id is not null;
create index notifications_broadcast_idx on notifications (broadcast_id) where broadcast_id is not null;
create index notifications_provider_message_idx on notifications (tenant_id, provider_message_id)
    where provider_message_id is not null and channel <> 'inapp';

-- The failed-work view filters on the stage its index holds.
create or replace view failed_work as
select 'notification'::text as kind, n.id, n.tenant_id, n.channel,
       n.failed_provider as provider, coalesce(n.error_class, 'unknown') as error_class,
       n.failed_at, n.attempts,
       case when coalesce(n.error_class, 'unknown') in ('other', 'unknown')
            then 'an unclassified error (its text is withheld)'
            else replace(n.last_error, n.recipient, '[recipient]') end as error,
       n.content_redacted_at is null as retryable
from notifications n
where n.stage = 2 and n.discarded_at is null
union all
select 'webhook', d.id, d.tenant_id, null, null,
       webhook_error_reason(d.last_error, d.last_status_code),
       d.updated_at, d.attempts,
       case
           when d.last_status_code is not null then 'the endpoint answered HTTP ' || d.last_status_code
           when d.last_error like 'the endpoint was disabled%' then 'the endpoint was disabled'
           when d.last_error like 'the worker stopped during the attempt%' then 'the worker stopped during the attempt'
           when d.last_error like 'no answer from the endpoint%' then 'no answer from the endpoint in time'
           when d.last_error like 'cannot connect to the endpoint%' then 'cannot connect to the endpoint'
           when d.last_error like 'the endpoint URL%' then 'the endpoint URL is refused'
           when d.last_error like 'the endpoint''s secret%' then 'the endpoint''s secret does not open'
           else 'the call to the endpoint failed'
       end,
       true
from webhook_deliveries d
where d.status = 'failed' and d.discarded_at is null
union all
select 'bulk_job', b.id, b.tenant_id, null, null,
       bulk_error_reason(b.failure),
       b.failed_at, null::integer,
       case
           when b.failure like 'the job''s template no longer exists%' then 'the job''s template no longer exists'
           when b.failure in ('the file is empty', 'the file has a header but no rows') then b.failure
           else 'the file was refused (see the job''s failure)'
       end,
       false
from bulk_jobs b
where b.status = 'failed' and b.discarded_at is null
union all
select 'shipment', s.id, s.tenant_id, null, 'ups',
       shipment_error_reason(s.last_error),
       s.updated_at, s.poll_failures,
       case
           when s.last_error like 'UPS polls of this organisation are paused%' then 'UPS polls of this organisation are paused after repeated failures'
           when s.last_error like 'UPS asked to slow down%' then 'UPS asked to slow down (429)'
           when s.last_error like 'the poll could not be recorded%' then 'the poll could not be recorded'
           else 'the UPS tracking call failed'
       end,
       true
from shipments s
where s.poll_failures > 0 and (s.discarded_at is null or s.discarded_at < s.updated_at);
