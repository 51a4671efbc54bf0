-- Failed work for operators: notifications that ended `failed` or
-- `bounced`, webhook deliveries that gave up, bulk CSV jobs that failed and
-- UPS shipment polls that keep failing, grouped by what went wrong, to be
-- retried or discarded.
--
-- A notification that fails gets `failed_at`, an `error_class` (a stable
-- name derived from its recorded error, which never holds a provider's own
-- text) and the provider that failed it, set by triggers that run only for
-- rows moving into `failed` or `bounced`, so the send path pays nothing.
-- Discarding sets `discarded_at`: the row keeps its status for its caller
-- and leaves the failed lists. The lists read small partial indexes of the
-- failed, undiscarded rows only.

alter table notifications
    add column failed_at timestamptz,
    add column error_class text,
    add column failed_provider text,
    add column discarded_at timestamptz;
alter table webhook_deliveries add column discarded_at timestamptz;
alter table bulk_jobs add column discarded_at timestamptz;
alter table shipments add column discarded_at timestamptz;

-- The class of a notification's recorded error: the stable name of the
-- platform's failure reason whose text the error starts with
-- (shared/src/providers.rs `FailureReason`), or of the callback, worker and
-- subscriber texts; `other` for anything else, `unknown` without an error.
create or replace function notification_error_class(error text) returns text
language sql immutable parallel safe as $$
    select case
        when error is null then 'unknown'
        when error like 'the provider rejected the recipient''s address as invalid%' then 'recipient_invalid'
        when error like 'the provider cannot reach the recipient''s address%' then 'recipient_unreachable'
        when error like 'the recipient has opted out of messages%' then 'recipient_opted_out'
        when error like 'the device token is no longer registered%' then 'device_token_gone'
        when error like 'the provider rejected the message content%' then 'content_rejected'
        when error like 'more than 24 hours since the person last wrote%' then 'whatsapp_window_closed'
        when error like 'the provider rejected the configured sender%' then 'sender_rejected'
        when error like 'the provider rejected the request%' then 'rejected'
        when error like 'the provider refused the configured credentials%' then 'credentials_refused'
        when error like 'the provider refused to issue an access token%' then 'token_refused'
        when error like 'the configured credentials cannot be used%' then 'credentials_unusable'
        when error like 'the provider asked to slow down%' then 'rate_limited'
        when error like 'the provider answered with a server error%' then 'provider_unavailable'
        when error like 'no answer from the provider%' then 'timeout'
        when error like 'cannot connect to the provider%' then 'cannot_connect'
        when error like 'talking to the provider failed%' then 'connection_failed'
        when error like 'the TLS handshake or certificate check%' then 'tls_failed'
        when error like 'the provider''s answer could not be read%' then 'unreadable_answer'
        when error like 'the provider answered without a message id%' then 'no_message_id'
        when error like 'the mail server refused the message%' then 'mail_refused'
        when error like 'the mail server deferred the message%' then 'mail_deferred'
        when error like 'the conversation with the mail server failed%' then 'mail_protocol'
        when error like 'writing the message to the mail folder failed%' then 'mail_file_failed'
        when error like 'the notification has no body%' then 'no_body'
        when error like 'the notification''s content is unreadable%' then 'content_unreadable'
        when error like 'the recipient is not a valid address%' then 'recipient_malformed'
        when error like 'the message cannot be built%' then 'message_unbuildable'
        when error like 'the provider config lacks what a send needs%' then 'config_incomplete'
        when error like 'no % provider is configured for this organisation%' then 'no_provider'
        when error like 'a UPS tracking config delivers no messages%' then 'not_a_messaging_provider'
        when error like 'the WhatsApp customer-service window cannot be checked%' then 'window_unknown'
        when error like 'skipped: circuit open%' then 'circuit_open'
        when error like 'skipped: rate limit%' then 'rate_spent'
        when error like 'the worker stopped during the attempt%' then 'worker_lost'
        when error like 'the subscriber was deleted before it was sent%' then 'subscriber_deleted'
        when error like 'the receiving mail server bounced the message%' then 'bounced'
        when error like 'SendGrid dropped the message%' then 'dropped'
        when error like 'Twilio reported the message %' then 'carrier_failed'
        when error like 'WhatsApp reported the message failed%' then 'carrier_failed'
        else 'other'
    end
$$;

-- A notification moving into `failed` or `bounced`: when, why, and the
-- provider of its latest attempt (the failing attempt's own row, written in
-- the same statement, corrects it below). A new failure shows again even if
-- an earlier one was discarded.
create or replace function notifications_failed() returns trigger
language plpgsql as $$
begin
    new.failed_at = now();
    new.error_class = notification_error_class(new.last_error);
    new.discarded_at = null;
    new.failed_provider = (
        select a.provider from delivery_attempts a
        where a.notification_id = new.id and a.outcome <> 'failover'
        order by a.id desc limit 1);
    return new;
end;
$$;
create trigger notifications_failed_update before update of status on notifications
    for each row
    when (new.status in ('failed', 'bounced') and old.status is distinct from new.status)
    execute function notifications_failed();
create trigger notifications_failed_insert before insert on notifications
    for each row
    when (new.status in ('failed', 'bounced'))
    execute function notifications_failed();

-- The attempt that failed a notification names its provider.
create or replace function delivery_attempts_failed() returns trigger
language plpgsql as $$
begin
    update notifications set failed_provider = new.provider
    where tenant_id = new.tenant_id and id = new.notification_id and status = 'failed'
      and failed_provider is distinct from new.provider;
    return null;
end;
$$;
create trigger delivery_attempts_failed after insert on delivery_attempts
    for each row
    when (new.outcome = 'failed')
    execute function delivery_attempts_failed();

-- Rows that failed before this migration.
update notifications n
set failed_at = n.updated_at,
    error_class = notification_error_class(n.last_error),
    failed_provider = (
        select a.provider from delivery_attempts a
        where a.notification_id = n.id and a.outcome <> 'failover'
        order by a.id desc limit 1)
where n.status in ('failed', 'bounced');

-- The failed lists: across tenants by time, and one tenant's by time.
create index notifications_failed_idx on notifications (failed_at, id)
    where status in ('failed', 'bounced') and discarded_at is null;
create index notifications_failed_tenant_idx on notifications (tenant_id, failed_at, id)
    where status in ('failed', 'bounced') and discarded_at is null;
create index webhook_deliveries_failed_idx on webhook_deliveries (updated_at, id)
    where status = 'failed' and discarded_at is null;
create index webhook_deliveries_failed_tenant_idx on webhook_deliveries (tenant_id, updated_at, id)
    where status = 'failed' and discarded_at is null;
create index bulk_jobs_failed_idx on bulk_jobs (failed_at, id)
    where status = 'failed' and discarded_at is null;
-- A notification's timeline lists the webhook deliveries about it.
create index webhook_deliveries_notification_idx on webhook_deliveries (notification_id)
    where notification_id is not null;
create index shipments_poll_failing_idx on shipments (updated_at, id)
    where poll_failures > 0;

-- Every failed item, one shape for all kinds. `error` is a text the
-- platform wrote (never a provider's, a recipient or content); `retryable`
-- says whether a retry can run it again. Filters on these columns reach
-- each kind's own partial index.
create view failed_work as
select 'notification'::text as kind, n.id, n.tenant_id, n.channel,
       n.failed_provider as provider, coalesce(n.error_class, 'unknown') as error_class,
       coalesce(n.failed_at, n.updated_at) as failed_at, n.attempts,
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
       coalesce(b.failed_at, b.updated_at), null::integer,
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

-- A retry or discard of everything a filter matched, done in steps of a
-- bounded number of rows by whichever scheduler takes it; `cursor_*` is how
-- far it got (kinds in a fixed order, then failure time and id), so a
-- restart carries on. Rows that failed after `upto` are left alone.
create table ops_actions (
    id uuid primary key,
    -- The organisation it is confined to; null: every organisation.
    tenant_id uuid references tenants (id),
    action text not null check (action in ('retry', 'discard')),
    status text not null default 'running'
        check (status in ('running', 'completed', 'cancelled', 'failed')),
    filter jsonb not null,
    upto timestamptz not null,
    matched bigint not null default 0 check (matched >= 0),
    processed bigint not null default 0 check (processed >= 0),
    applied bigint not null default 0 check (applied >= 0),
    skipped bigint not null default 0 check (skipped >= 0),
    cursor_kind integer not null default 0,
    cursor_at timestamptz,
    cursor_id uuid,
    error text,
    created_by text not null check (length(created_by) between 1 and 200),
    actor_tenant_id uuid references tenants (id),
    finished_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index ops_actions_running_idx on ops_actions (created_at) where status = 'running';
create index ops_actions_tenant_idx on ops_actions (tenant_id, created_at);
create trigger ops_actions_updated_at before update on ops_actions
    for each row execute function set_updated_at();
