-- The role the application runs as (`notify_app`; production logs in as a
-- member of it). It may read and append the audit log, never change or
-- remove rows: privileges say so, and the append-only trigger stops
-- everyone else, owners included.
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
alter default privileges in schema public
    grant select, insert, update, delete on tables to notify_app;
alter default privileges in schema public
    grant usage, select on sequences to notify_app;
revoke update, delete, truncate on audit_log from notify_app;
revoke update, delete, truncate on audit_log from public;
