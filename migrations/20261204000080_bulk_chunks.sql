-- A CSV bulk job's parser no longer inserts notifications itself: it holds
-- the valid rows' notifications (rendered, due) in chunks of up to 1,000
-- rows, one row here each, committed per part of the file with the part's
-- row errors, counters and resume cursor. A `bulk_chunk` job then expands
-- each chunk into notifications in one statement, in the transaction that
-- marks it expanded (and drops its payload), like a batch's chunks. `seq`
-- is the file row of the chunk's first notification, so a chunk's key is
-- the same however often its part is parsed. Jobs in flight from before
-- keep the notifications they already inserted and hold the rest here.
create table bulk_chunks (
    job_id uuid not null references bulk_jobs (id) on delete cascade,
    seq bigint not null check (seq >= 1),
    tenant_id uuid not null references tenants (id),
    -- Valid rows held, and the notifications they become.
    row_count integer not null check (row_count between 1 and 1000),
    notification_count integer not null check (notification_count >= 1),
    -- The notifications, as a JSON array; null once expanded.
    notifications json,
    -- The template's category and criticality when the rows were rendered.
    category text,
    critical boolean not null default false,
    dispatched_at timestamptz,
    expanded_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (job_id, seq)
);
-- The payload is read once and dropped: not worth compressing.
alter table bulk_chunks alter column notifications set storage external;
create index bulk_chunks_pending_idx on bulk_chunks (dispatched_at) where expanded_at is null;
create trigger bulk_chunks_updated_at before update on bulk_chunks
    for each row execute function set_updated_at();
