-- Notifications per status of each batch and CSV job, kept up to date by the
-- statements that write notifications instead of counted on every read.
--
-- A batch's or job's status (`GET /v1/batches/{id}`, `GET /v1/bulk/{id}`)
-- counted its notifications per status: a scan of every notification of the
-- group, ~0.7 s for a batch of a million, on every poll, while the batch
-- was being delivered.
--
-- Every statement that inserts, updates or deletes notifications of a batch
-- or job appends, through a statement-level trigger, one row per group and
-- status whose count it changed (+1 for each new row's status, -1 for each
-- old row's, summed; an update that leaves the status alone adds nothing).
-- Appending only, the triggers take no lock another writer waits for. The
-- scheduler folds the deltas into `group_status_counts` about once a second
-- (`shared::db::group_counts::fold`, `for update skip locked`, so two
-- schedulers never count a delta twice). A read sums the folded counts and
-- the deltas not yet folded in one statement, so it is exact in its
-- snapshot whether or not a fold ran.
--
-- `group_id` is the batch's id or the job's id (uuids drawn apart, never
-- equal); a notification of both counts in both.

create table group_status_deltas (
    id bigint generated always as identity primary key,
    tenant_id uuid not null,
    group_id uuid not null,
    status text not null,
    n bigint not null
);
create index group_status_deltas_group_idx on group_status_deltas (group_id);

create table group_status_counts (
    tenant_id uuid not null,
    group_id uuid not null,
    status text not null,
    n bigint not null,
    primary key (group_id, status)
);

select app_wall('group_status_deltas');
select app_wall('group_status_counts');

create function group_status_of_insert() returns trigger
language plpgsql as $$
begin
    insert into group_status_deltas (tenant_id, group_id, status, n)
    select tenant_id, g, status, count(*)
    from (
        select tenant_id, batch_id as g, status from new_rows where batch_id is not null
        union all
        select tenant_id, bulk_job_id, status from new_rows where bulk_job_id is not null
    ) r
    group by tenant_id, g, status;
    return null;
end
$$;

create function group_status_of_update() returns trigger
language plpgsql as $$
begin
    insert into group_status_deltas (tenant_id, group_id, status, n)
    select tenant_id, g, status, sum(d)
    from (
        select tenant_id, batch_id as g, status, 1 as d from new_rows where batch_id is not null
        union all
        select tenant_id, bulk_job_id, status, 1 from new_rows where bulk_job_id is not null
        union all
        select tenant_id, batch_id, status, -1 from old_rows where batch_id is not null
        union all
        select tenant_id, bulk_job_id, status, -1 from old_rows where bulk_job_id is not null
    ) r
    group by tenant_id, g, status
    having sum(d) <> 0;
    return null;
end
$$;

create function group_status_of_delete() returns trigger
language plpgsql as $$
begin
    insert into group_status_deltas (tenant_id, group_id, status, n)
    select tenant_id, g, status, -count(*)
    from (
        select tenant_id, batch_id as g, status from old_rows where batch_id is not null
        union all
        select tenant_id, bulk_job_id, status from old_rows where bulk_job_id is not null
    ) r
    group by tenant_id, g, status;
    return null;
end
$$;

-- The triggers first, then the counts of what exists: creating a trigger
-- locks out writers of `notifications` until this migration commits, so
-- every notification counts exactly once, in the backfill or by a trigger.
create trigger notifications_group_status_insert after insert on notifications
    referencing new table as new_rows
    for each statement execute function group_status_of_insert();
create trigger notifications_group_status_update after update on notifications
    referencing old table as old_rows new table as new_rows
    for each statement execute function group_status_of_update();
create trigger notifications_group_status_delete after delete on notifications
    referencing old table as old_rows
    for each statement execute function group_status_of_delete();

insert into group_status_counts (tenant_id, group_id, status, n)
select tenant_id, g, status, count(*)
from (
    select tenant_id, batch_id as g, status from notifications where batch_id is not null
    union all
    select tenant_id, bulk_job_id, status from notifications where bulk_job_id is not null
) r
group by tenant_id, g, status;
