-- The failed lists read each kind's failure time straight from the column
-- its partial index holds, so a time window and the newest-first order are
-- index range scans rather than a filter over every failed row. Every
-- failed notification has `failed_at` (its triggers and the backfill), and
-- so does every failed bulk job (its `fail`); older rows without one take
-- their last change.

update bulk_jobs set failed_at = updated_at where status = 'failed' and failed_at is null;
update notifications set failed_at = updated_at
where status in ('failed', 'bounced') and discarded_at is null and failed_at is null;

create or replace view failed_work as
select 'notification'::text as kind, n.id, n.tenant_id, n.channel,
       n.failed_provider as provider, coalesce(n.error_class, 'unknown') as error_class,
       n.failed_at, n.attempts,
       case when coalesce(n.error_class, 'unknown') in ('other', 'unknown')
            then 'an unclassified error (its text is withheld)'
            else replace(n.last_error, n.recipient, '[recipient]') end as error,
       n.content_redacted_at is null as retryable
from notifications n
where n.status in ('failed', 'bounced') and n.discarded_at is null
union all
select 'webhook', d.id, d.tenant_id, null, null,
       case
           when d.last_error like 'the endpoint was disabled%' then 'endpoint_disabled'
           when d.last_error like 'the worker stopped during the attempt%' then 'worker_lost'
           when d.last_status_code between 300 and 399 then 'http_3xx'
           when d.last_status_code between 400 and 499 then 'http_4xx'
           when d.last_status_code >= 500 then 'http_5xx'
           when d.last_error like 'no answer from the endpoint%' then 'timeout'
           when d.last_error like 'cannot connect to the endpoint%' then 'cannot_connect'
           when d.last_error like 'the endpoint URL%' then 'url_refused'
           when d.last_error like 'the endpoint''s secret%' then 'secret_unusable'
           when d.last_error like 'the call to the endpoint failed%' then 'call_failed'
           else 'other'
       end,
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
       case
           when b.failure like 'the job''s template no longer exists%' then 'template_missing'
           when b.failure in ('the file is empty', 'the file has a header but no rows') then 'file_empty'
           else 'file_refused'
       end,
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
       case
           when s.last_error like 'UPS polls of this organisation are paused%' then 'circuit_open'
           when s.last_error like 'UPS asked to slow down%' then 'rate_limited'
           when s.last_error like 'the poll could not be recorded%' then 'poll_unrecorded'
           else 'ups_error'
       end,
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
