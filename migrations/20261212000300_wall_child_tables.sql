-- Rows without an organisation column of their own are walled through the
-- row they belong to: a CSV job's file parts and row errors (which hold
-- patients' data) through `bulk_jobs`, refresh tokens through
-- `auth_sessions`, a permission set's inclusions through `permission_sets`.
-- A session sees (and may write) a child row only when it may see its
-- parent: the parent's own policy decides, so platform scope sees every row,
-- an organisation's scope its own, and an unset scope none.
create or replace function app_wall_child(t regclass, fk text, parent regclass) returns void
language plpgsql as $$
declare
    rule text := format(
        '(select app_scope_platform()) or exists (select 1 from %s p where p.id = %I)',
        parent, fk);
begin
    execute format('alter table %s enable row level security', t);
    execute format('alter table %s force row level security', t);
    if exists (select 1 from pg_policy where polrelid = t and polname = 'parent_wall') then
        execute format('drop policy parent_wall on %s', t);
    end if;
    execute format('create policy parent_wall on %s using (%s) with check (%s)', t, rule, rule);
end
$$;

select app_wall_child('bulk_parts', 'job_id', 'bulk_jobs');
select app_wall_child('bulk_row_errors', 'job_id', 'bulk_jobs');
select app_wall_child('refresh_tokens', 'session_id', 'auth_sessions');
select app_wall_child('permission_set_includes', 'set_id', 'permission_sets');
