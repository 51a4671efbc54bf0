-- Tables with a tenant_id created after the row-level security migration
-- (per-minute API 5xx counts, report templates, per-provider answer counts)
-- get the same wall: every such table not yet forced.
do $$
declare
    t regclass;
begin
    for t in
        select c.oid::regclass
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id'
                           and a.attnum > 0 and not a.attisdropped
        where n.nspname = 'public' and c.relkind in ('r', 'p')
          and not c.relforcerowsecurity
        order by c.relname
    loop
        perform app_wall(t);
    end loop;
end
$$;
