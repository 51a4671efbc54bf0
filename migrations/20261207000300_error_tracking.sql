-- Error tracking: every failed delivery attempt, webhook delivery that gave
-- up, failed bulk CSV job, failing UPS poll, failed job and API 5xx is
-- counted in a group of the same cause, per organisation, with first and
-- last seen, a few sample ids, and the recoveries (a notification that had
-- failed attempts and was later sent).
--
-- The cause is the platform's own reason code, the same one the operators'
-- failed-work view shows as `error_class` (`notification_error_class` and
-- the three functions below, which that view now calls), never a
-- provider's text. `error_class_of` sorts reason codes into the seven
-- error classes the API filters by.
--
-- Recording costs the send path no statement: a statement-level trigger on
-- `delivery_attempts` reads the rows its insert added (a transition table)
-- and counts them set-based, once per statement. The other kinds are rare
-- and counted by row triggers; failed jobs and API 5xx are counted in each
-- process's memory and written once a second through `record_errors`.

-- Reason codes of a webhook delivery, a bulk job and a shipment poll, as
-- the failed-work view used to spell them inline.
create or replace function webhook_error_reason(error text, status_code integer) returns text
language sql immutable parallel safe as $$
    select case
        when error like 'the endpoint was disabled%' then 'endpoint_disabled'
        when error like 'the worker stopped during the attempt%' then 'worker_lost'
        when status_code between 300 and 399 then 'http_3xx'
        when status_code between 400 and 499 then 'http_4xx'
        when status_code >= 500 then 'http_5xx'
        when error like 'no answer from the endpoint%' then 'timeout'
        when error like 'cannot connect to the endpoint%' then 'cannot_connect'
        when error like 'the endpoint URL%' then 'url_refused'
        when error like 'the endpoint''s secret%' then 'secret_unusable'
        when error like 'the call to the endpoint failed%' then 'call_failed'
        else 'other'
    end
$$;

create or replace function bulk_error_reason(failure text) returns text
language sql immutable parallel safe as $$
    select case
        when failure like 'the job''s template no longer exists%' then 'template_missing'
        when failure in ('the file is empty', 'the file has a header but no rows') then 'file_empty'
        else 'file_refused'
    end
$$;

create or replace function shipment_error_reason(error text) returns text
language sql immutable parallel safe as $$
    select case
        when error like 'UPS polls of this organisation are paused%' then 'circuit_open'
        when error like 'UPS asked to slow down%' then 'rate_limited'
        when error like 'the poll could not be recorded%' then 'poll_unrecorded'
        else 'ups_error'
    end
$$;

-- The error class of a reason code: one of transient, permanent,
-- validation, authorization, network, database, external_provider
-- (shared/src/errors.rs `ErrorClass`; a test holds the two together).
create or replace function error_class_of(reason text) returns text
language sql immutable parallel safe as $$
    select case
        when reason in ('recipient_invalid', 'recipient_malformed', 'content_rejected', 'no_body',
                        'content_unreadable', 'message_unbuildable', 'whatsapp_window_closed',
                        'file_empty', 'file_refused', 'template_missing', 'url_refused')
            then 'validation'
        when reason in ('credentials_refused', 'token_refused', 'credentials_unusable',
                        'sender_rejected', 'secret_unusable')
            then 'authorization'
        when reason in ('timeout', 'cannot_connect', 'connection_failed', 'tls_failed')
            then 'network'
        when reason in ('poll_unrecorded', 'database_error', 'postgres_unreachable')
            then 'database'
        when reason in ('rate_limited', 'provider_unavailable', 'mail_deferred', 'circuit_open',
                        'rate_spent', 'worker_lost', 'window_unknown', 'dependency_unavailable',
                        'job_failed')
            then 'transient'
        when reason in ('rejected', 'unreadable_answer', 'no_message_id', 'mail_refused',
                        'mail_protocol', 'bounced', 'dropped', 'carrier_failed', 'http_3xx',
                        'http_4xx', 'http_5xx', 'ups_error', 'call_failed')
            then 'external_provider'
        else 'permanent'
    end
$$;

-- A group's id: the same cause gives the same id in every process.
create or replace function error_group_id(kind text, reason text, provider text, channel text,
                                          source text) returns uuid
language sql immutable parallel safe as $$
    select md5(concat_ws('|', kind, error_class_of(reason), reason, coalesce(provider, ''),
                         coalesce(channel, ''), coalesce(source, '')))::uuid
$$;

create table error_groups (
    id uuid primary key,
    kind text not null check (kind in ('delivery', 'webhook', 'bulk_job', 'shipment', 'job', 'api')),
    class text not null check (class in ('transient', 'permanent', 'validation', 'authorization',
                                         'network', 'database', 'external_provider')),
    reason text not null check (reason ~ '^[a-z0-9_]{1,64}$'),
    -- The provider that failed (deliveries, `ups` for shipments).
    provider text check (length(provider) <= 64),
    channel text check (length(channel) <= 16),
    -- The queue of a failed job, the route template of an API 5xx.
    source text check (length(source) <= 100),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create trigger error_groups_updated_at before update on error_groups
    for each row execute function set_updated_at();

-- A group's counts in one organisation; the nil uuid is the platform's
-- own (API 5xx, jobs of no organisation). No foreign key: counts outlive
-- nothing but are kept apart per organisation.
create table error_group_tenants (
    group_id uuid not null references error_groups (id) on delete cascade,
    tenant_id uuid not null,
    occurrences bigint not null default 0 check (occurrences >= 0),
    recoveries bigint not null default 0 check (recoveries >= 0),
    first_seen timestamptz not null,
    last_seen timestamptz not null,
    last_recovered_at timestamptz,
    -- The newest notification, job or request ids (at most 5), never
    -- anything else.
    sample_ids text[] not null default '{}' check (cardinality(sample_ids) <= 5),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (group_id, tenant_id)
);
create index error_group_tenants_tenant_idx on error_group_tenants (tenant_id, last_seen);
create trigger error_group_tenants_updated_at before update on error_group_tenants
    for each row execute function set_updated_at();

-- Per hour, for statistics over a range.
create table error_hours (
    group_id uuid not null references error_groups (id) on delete cascade,
    tenant_id uuid not null,
    hour timestamptz not null,
    occurrences bigint not null default 0,
    recoveries bigint not null default 0,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (group_id, tenant_id, hour)
);
create index error_hours_hour_idx on error_hours (hour);
create trigger error_hours_updated_at before update on error_hours
    for each row execute function set_updated_at();

-- One notification that was sent after failed attempts in the group.
create table error_recoveries (
    id bigint generated always as identity primary key,
    group_id uuid not null references error_groups (id) on delete cascade,
    tenant_id uuid not null,
    notification_id uuid not null,
    -- Its failed attempts in the group before it was sent.
    failures integer not null check (failures > 0),
    recovered_at timestamptz not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index error_recoveries_group_idx on error_recoveries (group_id, tenant_id, id);
create trigger error_recoveries_updated_at before update on error_recoveries
    for each row execute function set_updated_at();

-- The occurrences handed to `record_errors`, one row each, with their
-- group; a null tenant is the platform's.
create or replace function error_batch(
    kinds text[], reasons text[], providers text[], channels text[], sources text[],
    tenants uuid[], samples text[], counts bigint[], ats timestamptz[]
) returns table (group_id uuid, kind text, reason text, provider text, channel text,
                 source text, tenant_id uuid, sample text, n bigint, at timestamptz)
language sql immutable parallel safe as $$
    select error_group_id(u.kind, u.reason, u.provider, u.channel, u.source), u.kind, u.reason,
           u.provider, u.channel, u.source,
           coalesce(u.tenant, '00000000-0000-0000-0000-000000000000'::uuid), u.sample, u.n, u.at
    from unnest(kinds, reasons, providers, channels, sources, tenants, samples, counts, ats)
        as u(kind, reason, provider, channel, source, tenant, sample, n, at)
    where u.n > 0
$$;

-- Counts occurrences: one element per (kind, reason, provider, channel,
-- source, tenant, sample, count, time). Keys are written in one order, so
-- concurrent writers cannot deadlock.
create or replace function record_errors(
    kinds text[], reasons text[], providers text[], channels text[], sources text[],
    tenants uuid[], samples text[], counts bigint[], ats timestamptz[]
) returns void
language plpgsql as $$
begin
    insert into error_groups (id, kind, class, reason, provider, channel, source)
    select distinct on (b.group_id) b.group_id, b.kind, error_class_of(b.reason), b.reason,
           b.provider, b.channel, b.source
    from error_batch(kinds, reasons, providers, channels, sources, tenants, samples, counts, ats) b
    order by b.group_id
    on conflict (id) do nothing;

    insert into error_group_tenants as t
        (group_id, tenant_id, occurrences, first_seen, last_seen, sample_ids)
    select b.group_id, b.tenant_id, sum(b.n), min(b.at), max(b.at),
           coalesce((array_agg(b.sample order by b.at desc)
                     filter (where b.sample is not null))[1:5], '{}')
    from error_batch(kinds, reasons, providers, channels, sources, tenants, samples, counts, ats) b
    group by b.group_id, b.tenant_id
    order by b.group_id, b.tenant_id
    on conflict (group_id, tenant_id) do update
    set occurrences = t.occurrences + excluded.occurrences,
        first_seen = least(t.first_seen, excluded.first_seen),
        last_seen = greatest(t.last_seen, excluded.last_seen),
        sample_ids = array(
            select x.s from unnest(excluded.sample_ids || t.sample_ids) with ordinality as x(s, o)
            group by x.s order by min(x.o) limit 5);

    insert into error_hours as h (group_id, tenant_id, hour, occurrences)
    select b.group_id, b.tenant_id, date_trunc('hour', b.at), sum(b.n)
    from error_batch(kinds, reasons, providers, channels, sources, tenants, samples, counts, ats) b
    group by 1, 2, 3
    order by 1, 2, 3
    on conflict (group_id, tenant_id, hour) do update
    set occurrences = h.occurrences + excluded.occurrences;
end;
$$;

-- Failed attempts (retry, failed, failover) are counted in their group;
-- a `sent` attempt of a notification with failed attempts before it is a
-- recovery of each of their groups. Once per inserting statement.
create or replace function delivery_attempts_errors() returns trigger
language plpgsql as $$
begin
    perform record_errors(
        array_agg('delivery'::text), array_agg(notification_error_class(a.error)),
        array_agg(a.provider), array_agg(n.channel), array_agg(null::text),
        array_agg(a.tenant_id), array_agg(a.notification_id::text), array_agg(1::bigint),
        array_agg(a.created_at))
    from added a join notifications n on n.id = a.notification_id
    where a.outcome in ('retry', 'failed', 'failover')
    having count(*) > 0;

    with recovered as (
        select error_group_id('delivery', notification_error_class(f.error), f.provider,
                              n.channel, null) as group_id,
               s.tenant_id, s.notification_id, count(*) as failures, max(s.created_at) as at
        from added s
        join delivery_attempts f
          on f.notification_id = s.notification_id and f.id < s.id
         and f.outcome in ('retry', 'failed', 'failover')
        join notifications n on n.id = s.notification_id
        where s.outcome = 'sent'
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
create trigger delivery_attempts_errors after insert on delivery_attempts
    referencing new table as added
    for each statement execute function delivery_attempts_errors();

-- A webhook delivery that gave up.
create or replace function webhook_deliveries_errors() returns trigger
language plpgsql as $$
begin
    perform record_errors(array['webhook'],
        array[webhook_error_reason(new.last_error, new.last_status_code)], array[null::text],
        array[null::text], array[null::text], array[new.tenant_id], array[new.id::text],
        array[1::bigint], array[now()]);
    return null;
end;
$$;
create trigger webhook_deliveries_errors after update of status on webhook_deliveries
    for each row
    when (new.status = 'failed' and old.status is distinct from new.status)
    execute function webhook_deliveries_errors();

-- A bulk CSV job that failed.
create or replace function bulk_jobs_errors() returns trigger
language plpgsql as $$
begin
    perform record_errors(array['bulk_job'], array[bulk_error_reason(new.failure)],
        array[null::text], array[null::text], array[null::text], array[new.tenant_id],
        array[new.id::text], array[1::bigint], array[now()]);
    return null;
end;
$$;
create trigger bulk_jobs_errors after update of status on bulk_jobs
    for each row
    when (new.status = 'failed' and old.status is distinct from new.status)
    execute function bulk_jobs_errors();

-- A UPS poll of a shipment that failed.
create or replace function shipments_errors() returns trigger
language plpgsql as $$
begin
    perform record_errors(array['shipment'], array[shipment_error_reason(new.last_error)],
        array['ups'], array[null::text], array[null::text], array[new.tenant_id],
        array[new.id::text], array[1::bigint], array[now()]);
    return null;
end;
$$;
create trigger shipments_errors after update of poll_failures on shipments
    for each row
    when (new.poll_failures > old.poll_failures)
    execute function shipments_errors();

-- Read-only values and admin-managed lists: only the kinds platform admins
-- edit live here (notification categories, organisation types' labels);
-- statuses, channels and error classes come from the code's own enums.
create table lookup_values (
    kind text not null check (kind in ('notification_category', 'organization_type')),
    code text not null check (code ~ '^[a-z][a-z0-9_]{0,63}$'),
    label text not null check (length(label) between 1 and 100),
    description text check (length(description) <= 500),
    position integer not null default 0 check (position between 0 and 10000),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (kind, code)
);
create trigger lookup_values_updated_at before update on lookup_values
    for each row execute function set_updated_at();

insert into lookup_values (kind, code, label, description, position) values
    ('organization_type', 'platform', 'Platform', 'The organisation that runs the platform', 0),
    ('organization_type', 'clinic', 'Clinic', null, 1),
    ('organization_type', 'hospital', 'Hospital', null, 2),
    ('organization_type', 'pharmacy', 'Pharmacy', null, 3),
    ('organization_type', 'laboratory', 'Laboratory', null, 4),
    ('organization_type', 'telehealth', 'Telehealth', null, 5),
    ('organization_type', 'distributor', 'Distributor', null, 6),
    ('organization_type', 'other', 'Other', null, 7),
    ('notification_category', 'appointment', 'Appointments', 'Reminders and changes to appointments', 0),
    ('notification_category', 'prescription', 'Prescriptions', 'Prescription status and refills', 1),
    ('notification_category', 'results', 'Results', 'Test and lab results are ready', 2),
    ('notification_category', 'shipment', 'Shipments', 'Shipment tracking updates', 3),
    ('notification_category', 'billing', 'Billing', 'Invoices and payments', 4),
    ('notification_category', 'security', 'Security', 'Sign-in and account security', 5),
    ('notification_category', 'general', 'General', 'Everything else', 6);

-- The failed-work view classifies through the same functions.
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
