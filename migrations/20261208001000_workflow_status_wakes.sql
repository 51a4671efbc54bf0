-- Status waits are woken from the notification's side instead of by a sweep
-- over every waiting run.
--
-- A notification a run waits on names that run in `waited_by_run` (set by
-- the send step when a later step of its version waits on it, and again
-- when a `wait_for` step starts watching it). A row trigger, whose `when`
-- only passes rows with that column set, looks at the run when such a
-- notification's status or read time changes: if the run still waits on it
-- and the status it waits for is reached, the trigger queues a wake in
-- `workflow_wakes` and stops watching; if the run no longer waits on it, it
-- just stops watching. Notifications no run waits on pay one null test per
-- update, nothing else. The runner turns queued wakes into due runs at the
-- start of each pass, with its own clock.
alter table notifications add column waited_by_run uuid;

create table workflow_wakes (
    run_id uuid not null,
    tenant_id uuid not null references tenants (id),
    notification_id uuid not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (run_id, notification_id)
);
create trigger workflow_wakes_updated_at before update on workflow_wakes
    for each row execute function set_updated_at();

-- Whether notification `n` (its status and read time) reached `wanted`.
create function workflow_status_reached(wanted text, status text, read_at timestamptz)
returns boolean language sql immutable as $$
    select case wanted
        when 'read' then read_at is not null
        when 'delivered' then status in ('delivered', 'read') or read_at is not null
        else status in ('sent', 'delivered', 'read') or read_at is not null end
$$;

create function workflow_wait_notification() returns trigger language plpgsql as $$
declare
    wanted text;
begin
    select r.wait_status into wanted from workflow_runs r
    where r.id = old.waited_by_run and r.tenant_id = new.tenant_id
      and r.status = 'waiting' and r.wait_status is not null
      and new.id = any(r.wait_notifications);
    if not found then
        new.waited_by_run = null;
    elsif workflow_status_reached(wanted, new.status, new.read_at) then
        insert into workflow_wakes (run_id, tenant_id, notification_id)
        values (old.waited_by_run, new.tenant_id, new.id)
        on conflict do nothing;
        new.waited_by_run = null;
    end if;
    return new;
end $$;

create trigger notifications_workflow_wait before update on notifications
    for each row
    when (old.waited_by_run is not null
          and (new.status is distinct from old.status or new.read_at is distinct from old.read_at))
    execute function workflow_wait_notification();

-- Runs waiting now: watch their notifications, and wake those whose status
-- is already reached.
update notifications n set waited_by_run = r.id
from workflow_runs r
where r.status = 'waiting' and r.wait_notifications is not null and r.wait_status is not null
  and n.tenant_id = r.tenant_id and n.id = any(r.wait_notifications)
  and not workflow_status_reached(r.wait_status, n.status, n.read_at);
insert into workflow_wakes (run_id, tenant_id, notification_id)
select r.id, r.tenant_id, n.id
from workflow_runs r
join notifications n on n.tenant_id = r.tenant_id and n.id = any(r.wait_notifications)
where r.status = 'waiting' and r.wait_status is not null
  and workflow_status_reached(r.wait_status, n.status, n.read_at)
on conflict do nothing;

-- The sweep that read this index is gone.
drop index workflow_runs_waiting_notifications_idx;
