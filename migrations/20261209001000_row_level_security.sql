-- Row-level security: a second wall behind the tenant filters in the code.
--
-- Every table with a `tenant_id` column gets ENABLE and FORCE ROW LEVEL
-- SECURITY and one policy, `tenant_wall`: a session sees and writes the rows
-- of the organisation named by the setting `app.tenant_id`, every row when
-- the setting is `platform` (the dispatcher, workers, scheduler, sign-in and
-- API-key lookup, provider callbacks, platform administrators), and nothing
-- at all when the setting is unset, empty or not a uuid (fail closed).
--
-- The application's pool acts as `notify_app` (migration 31), which owns no
-- table and cannot bypass RLS; FORCE makes the policy bind the tables' owner
-- too, so a login role that owns the tables is walled as well (only a
-- superuser or a BYPASSRLS role is not, and the pool switches those to
-- `notify_app` when it connects).
--
-- A table added later with a `tenant_id` column must call
-- `select app_wall('the_table');` in its migration: a test enumerates every
-- such table from the catalogue and fails for one that is not walled.

do $$
begin
    create role notify_app nologin;
exception when duplicate_object or unique_violation then
    null;
end
$$;

grant usage on schema public to notify_app;
grant select, insert, update, delete on all tables in schema public to notify_app;
grant usage, select on all sequences in schema public to notify_app;
grant execute on all functions in schema public to notify_app;
alter default privileges in schema public
    grant execute on functions to notify_app;
revoke update, delete, truncate on audit_log from notify_app;

-- True in platform scope. Inlined into the policies; read once per query
-- there through a scalar subquery.
create or replace function app_scope_platform() returns boolean
language sql stable parallel safe as $$
    select coalesce(current_setting('app.tenant_id', true) = 'platform', false)
$$;

-- The organisation of the tenant scope; null in platform scope and when the
-- setting is unset, empty or malformed (never a cast error).
create or replace function app_tenant() returns uuid
language sql stable parallel safe as $$
    select case
        when current_setting('app.tenant_id', true)
             ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
        then current_setting('app.tenant_id', true)::uuid
    end
$$;

-- Walls `t` (which has a `tenant_id` column): enables and forces RLS and
-- (re)creates its `tenant_wall` policy. Rows whose `tenant_id` is null
-- (platform-wide rows) are visible in platform scope only.
create or replace function app_wall(t regclass) returns void
language plpgsql as $$
begin
    execute format('alter table %s enable row level security', t);
    execute format('alter table %s force row level security', t);
    if exists (select 1 from pg_policy where polrelid = t and polname = 'tenant_wall') then
        execute format('drop policy tenant_wall on %s', t);
    end if;
    execute format(
        'create policy tenant_wall on %s
             using ((select app_scope_platform()) or tenant_id = (select app_tenant()))
             with check ((select app_scope_platform()) or tenant_id = (select app_tenant()))',
        t);
end
$$;

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
        order by c.relname
    loop
        perform app_wall(t);
    end loop;
end
$$;

-- Built-in permission sets (no organisation) are read by every
-- organisation; only platform scope may change them.
create policy shared_builtins on permission_sets for select
    using (tenant_id is null);

-- A view runs with its owner's rights unless it is a security invoker: the
-- owner bypasses RLS, so every view reads as the caller.
alter view failed_work set (security_invoker = true);
