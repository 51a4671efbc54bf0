-- What notification status updates cost, for the trigger that wakes
-- workflow runs waiting on a status (migration `workflow_status_wakes`).
-- Run against a scratch database with the migrations applied, e.g.
--   psql -d scratch -v watched=0 -f api/benches/notification_status_updates.sql
-- then, for one-row updates as workers make them (numbered by `bench_ids`),
--   pgbench -n -c 2 -T 20 -f api/benches/notification_status_update.pgbench scratch
-- `watched` is how many of the 100,000 notifications name a run in
-- `waited_by_run` (0, the default: the hot path of notifications no run
-- waits on; runs before the migration too). Watched rows name a run that is
-- not waiting, so the trigger looks it up and stops watching: the cost of
-- the trigger's path, not of waking. Numbers: README, "Workflows".
\set ON_ERROR_STOP 1
\timing off
set client_min_messages = warning;
insert into tenants (id, name) values ('00000000-0000-0000-0000-00000000b001', 'bench')
on conflict do nothing;
delete from notifications where tenant_id = '00000000-0000-0000-0000-00000000b001';
insert into notifications (id, tenant_id, channel, recipient, content, max_attempts, status)
select gen_random_uuid(), '00000000-0000-0000-0000-00000000b001', 'email',
       'bench' || i || '@example.test', '{"subject": "s", "text": "t"}', 3, 'sending'
from generate_series(1, 100000) as i;
drop table if exists bench_ids;
create table bench_ids as
select row_number() over ()::int as n, id from notifications
where tenant_id = '00000000-0000-0000-0000-00000000b001';
alter table bench_ids add primary key (n);
\if :{?watched}
\else
\set watched 0
\endif
select :watched > 0 as do_watch \gset
\if :do_watch
update notifications set waited_by_run = '00000000-0000-0000-0000-00000000b002'
where id in (select id from notifications
             where tenant_id = '00000000-0000-0000-0000-00000000b001' limit :watched);
\endif
vacuum analyze notifications;
\timing on
-- 100,000 single-row updates in one statement each would measure psql;
-- three set-based passes measure the per-row cost the trigger adds.
update notifications set status = 'sent', sent_at = now()
where tenant_id = '00000000-0000-0000-0000-00000000b001';
update notifications set status = 'delivered', delivered_at = now()
where tenant_id = '00000000-0000-0000-0000-00000000b001';
update notifications set read_at = now()
where tenant_id = '00000000-0000-0000-0000-00000000b001';
\timing off
