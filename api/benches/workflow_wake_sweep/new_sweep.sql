\timing on
with woken as (delete from workflow_wakes returning run_id, tenant_id)
update workflow_runs r set run_at = now()
from (select distinct run_id, tenant_id from woken) w
where r.id = w.run_id and r.tenant_id = w.tenant_id
  and r.status = 'waiting' and r.run_at > now();
