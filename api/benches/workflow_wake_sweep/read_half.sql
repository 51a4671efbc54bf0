\timing on
update notifications set read_at = now(), status = 'read'
where tenant_id = '00000000-0000-0000-0000-00000000c001'
  and recipient in (select 'p' || i from generate_series(1, :n / 2) i);
select count(*) as wakes from workflow_wakes;
