-- Report templates of an organisation's own: a period (a day, a week, a
-- calendar month, or 1 to 366 days), the sections a report keeps and an
-- optional channel. Used by reports (`?template=` its id or key) and by
-- report schedules, which name one by id (`report_template_id`, within
-- the same organisation; a template a schedule uses cannot be deleted).
create table report_templates (
    id uuid primary key,
    tenant_id uuid not null references tenants (id) on delete cascade,
    key text not null check (key ~ '^[a-z][a-z0-9_]{0,63}$'
        and key not in ('daily_summary', 'weekly_performance', 'monthly_comprehensive', 'custom')),
    name text not null check (length(name) between 1 and 200),
    period text not null check (period in ('day', 'week', 'month', 'days')),
    period_days integer check (period_days between 1 and 366),
    sections text[] not null check (
        cardinality(sections) between 1 and 8
        and sections <@ array['channels', 'providers', 'templates', 'categories', 'busiest_hours',
                              'days', 'comparison', 'trend']::text[]),
    channel text check (channel in ('email', 'sms', 'push', 'whatsapp', 'inapp')),
    created_by text not null check (length(created_by) <= 200),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint report_templates_days_given check ((period = 'days') = (period_days is not null)),
    constraint report_templates_tenant_key_key unique (tenant_id, key),
    constraint report_templates_tenant_id_id_key unique (tenant_id, id)
);
create trigger report_templates_updated_at before update on report_templates
    for each row execute function set_updated_at();

alter table report_schedules add column report_template_id uuid;
alter table report_schedules add constraint report_schedules_report_template_fkey
    foreign key (tenant_id, report_template_id) references report_templates (tenant_id, id);
create index report_schedules_report_template_idx on report_schedules (report_template_id)
    where report_template_id is not null;
alter table report_schedules drop constraint report_schedules_template_check;
alter table report_schedules add constraint report_schedules_template_check check (
    (template in ('daily_summary', 'weekly_performance', 'monthly_comprehensive')
     and report_template_id is null)
    or (template = 'own' and report_template_id is not null));
