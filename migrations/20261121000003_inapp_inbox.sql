-- The in-app channel: subscribers (a tenant's end users, linked by the id
-- their identity provider gives them) and their inbox state on notifications.

create table subscribers (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    external_id text not null check (length(external_id) between 1 and 255),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint subscribers_tenant_external_id_key unique (tenant_id, external_id)
);
create trigger subscribers_updated_at before update on subscribers
    for each row execute function set_updated_at();

alter table notifications drop constraint notifications_channel_check;
alter table notifications add constraint notifications_channel_check check (channel in ('email', 'inapp'));

alter table notifications
    add column subscriber_id uuid references subscribers (id),
    add column category text check (length(category) between 1 and 100),
    add column read_at timestamptz,
    add column archived_at timestamptz,
    add column deleted_at timestamptz;

alter table notifications add constraint notifications_inapp_has_subscriber
    check (channel <> 'inapp' or subscriber_id is not null);

-- A subscriber's inbox, newest first (also the cursor order).
create index notifications_inbox_idx
    on notifications (subscriber_id, created_at desc, id desc)
    where channel = 'inapp' and status = 'sent' and deleted_at is null;
