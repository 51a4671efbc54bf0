-- CSV bulk jobs. The upload is streamed into `bulk_parts` (1 MiB each, in
-- order) so any worker replica can read it; a `bulk_csv` job parses it and
-- commits per part: the notifications of that part's valid rows (held back:
-- `run_at = 'infinity'`), its row errors, the counters and the resume cursor,
-- in one transaction. Only when the whole file parsed cleanly are the held
-- notifications released (set-based); a file-level error deletes them, so a
-- bad file sends nothing.
create table bulk_jobs (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    template_key text not null check (length(template_key) between 1 and 100),
    channels text[] not null check (cardinality(channels) between 1 and 5),
    locale text check (length(locale) between 1 and 35),
    mapping jsonb not null,
    file_name text check (length(file_name) <= 255),
    size_bytes bigint not null default 0,
    status text not null default 'uploading'
        check (status in ('uploading', 'queued', 'parsing', 'sending', 'completed', 'failed', 'cancelled')),
    failure text,
    -- The resume cursor: the byte offset where the next unread row starts,
    -- and how many rows (after the header) lie before it.
    cursor_offset bigint not null default 0,
    cursor_row bigint not null default 0,
    header text[],
    rows_read bigint not null default 0,
    rows_valid bigint not null default 0,
    rows_invalid bigint not null default 0,
    rows_duplicate bigint not null default 0,
    lease_until timestamptz,
    dispatched_at timestamptz,
    parsed_at timestamptz,
    completed_at timestamptz,
    cancelled_at timestamptz,
    failed_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index bulk_jobs_pending_idx on bulk_jobs (lease_until) where status in ('queued', 'parsing');
create trigger bulk_jobs_updated_at before update on bulk_jobs
    for each row execute function set_updated_at();

create table bulk_parts (
    job_id uuid not null references bulk_jobs (id) on delete cascade,
    part integer not null check (part >= 0),
    data bytea not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (job_id, part)
);
create trigger bulk_parts_updated_at before update on bulk_parts
    for each row execute function set_updated_at();

create table bulk_row_errors (
    job_id uuid not null references bulk_jobs (id) on delete cascade,
    row_number bigint not null,
    position smallint not null,
    column_name text not null,
    reason text not null,
    value text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (job_id, row_number, position)
);
create trigger bulk_row_errors_updated_at before update on bulk_row_errors
    for each row execute function set_updated_at();

alter table notifications
    add column bulk_job_id uuid references bulk_jobs (id),
    add column bulk_row bigint;
create unique index notifications_bulk_row_idx
    on notifications (bulk_job_id, bulk_row, channel) where bulk_job_id is not null;
create index notifications_bulk_status_idx
    on notifications (bulk_job_id, status) where bulk_job_id is not null;
