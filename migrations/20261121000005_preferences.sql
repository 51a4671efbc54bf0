-- Subscribers' own preferences (channels, categories, quiet hours), and the
-- notification fields that decide whether they apply.
create table subscriber_preferences (
    subscriber_id uuid primary key references subscribers (id) on delete cascade,
    tenant_id uuid not null references tenants (id),
    preferences jsonb not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create trigger subscriber_preferences_updated_at before update on subscriber_preferences
    for each row execute function set_updated_at();

-- A critical notification (a lab result, a safety alert) ignores opt-outs and
-- quiet hours.
alter table notifications add column critical boolean not null default false;

alter table notifications drop constraint notifications_status_check;
alter table notifications add constraint notifications_status_check
    check (status in ('queued', 'sending', 'sent', 'failed', 'suppressed'));

alter table delivery_attempts drop constraint delivery_attempts_outcome_check;
alter table delivery_attempts add constraint delivery_attempts_outcome_check
    check (outcome in ('sent', 'retry', 'failed', 'suppressed'));

-- Email sends may name the subscriber they are for, so their preferences apply.
alter table notifications drop constraint notifications_inapp_has_subscriber;
alter table notifications add constraint notifications_inapp_has_subscriber
    check (channel <> 'inapp' or subscriber_id is not null);
