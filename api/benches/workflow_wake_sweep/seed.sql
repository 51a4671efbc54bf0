-- 10,000 (`-v n=10000`) runs waiting on `read` of one in-app notification each,
-- in a scratch database with the migrations applied; `-v watch=true` gives
-- the notifications their watch (as the runner does), `false` leaves them
-- unwatched (as before the wake trigger). Then `read_half.sql -v n=…`
-- marks half of them read, and `old_sweep.sql` (the sweep the runner made
-- every pass before; needs `create index on workflow_runs (tenant_id) where
-- status = 'waiting' and wait_notifications is not null`) or `new_sweep.sql`
-- (the pass that turns queued wakes into due runs) is timed.
\set ON_ERROR_STOP 1
set client_min_messages = warning;
\set t '00000000-0000-0000-0000-00000000c001'
insert into tenants (id, name) values (:'t', 'sweep') on conflict do nothing;
delete from workflow_wakes where tenant_id = :'t';
delete from workflow_runs where tenant_id = :'t';
delete from workflows where tenant_id = :'t';
delete from notifications where tenant_id = :'t';
delete from subscriber_events where tenant_id = :'t';
delete from subscribers where tenant_id = :'t';
insert into subscribers (id, tenant_id, external_id)
select gen_random_uuid(), :'t', 'p' || i from generate_series(1, :n) i;
insert into workflows (id, tenant_id, key, version) values ('00000000-0000-0000-0000-00000000c002', :'t', 'w', 1);
insert into workflow_versions (workflow_id, tenant_id, version, name, steps)
values ('00000000-0000-0000-0000-00000000c002', :'t', 1, 'w', '[]');
create temp table seeded as
select s.id as subscriber_id, gen_random_uuid() as run_id, gen_random_uuid() as notification_id, row_number() over () as i
from subscribers s where s.tenant_id = :'t';
insert into notifications (id, tenant_id, channel, recipient, content, max_attempts, status, subscriber_id, waited_by_run)
select notification_id, :'t', 'inapp', 'p' || i, '{"title": "t"}', 3, 'sent', subscriber_id,
       case when :watch then run_id end
from seeded;
insert into workflow_runs (id, tenant_id, workflow_id, version, subscriber_id, payload, status, step,
                           run_at, wait_until, wait_notifications, wait_status)
select run_id, :'t', '00000000-0000-0000-0000-00000000c002', 1, subscriber_id, '{}', 'waiting', 1,
       now() + interval '1 hour', now() + interval '1 hour', array[notification_id], 'read'
from seeded;
analyze notifications; analyze workflow_runs; analyze subscribers;
