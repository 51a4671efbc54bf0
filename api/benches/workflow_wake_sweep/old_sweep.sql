\timing on
update workflow_runs r set run_at = now()
where r.status = 'waiting' and r.wait_notifications is not null and r.run_at > now()
  and exists (select 1 from notifications n
              where n.tenant_id = r.tenant_id and n.id = any(r.wait_notifications)
                and (case r.wait_status
        when 'read' then n.read_at is not null
        when 'delivered' then n.status in ('delivered', 'read') or n.read_at is not null
        else n.status in ('sent', 'delivered', 'read') or n.read_at is not null end));
