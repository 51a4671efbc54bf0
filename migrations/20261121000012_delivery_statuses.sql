-- What providers report after they accept a message: delivered, read,
-- bounced or failed. Their signed callbacks move a sent notification forward
-- (never back), and each accepted event is recorded once.
--
-- `deferred` and `cancelled` are reserved for later use: nothing sets them
-- yet. `read_at` (added with the in-app inbox) also holds when a provider
-- reported an email, SMS or WhatsApp message read.
alter table notifications drop constraint notifications_status_check;
alter table notifications add constraint notifications_status_check
    check (status in ('queued', 'deferred', 'sending', 'sent', 'delivered', 'read',
                      'failed', 'bounced', 'suppressed', 'cancelled'));

alter table notifications add column delivered_at timestamptz;

-- Callbacks find a notification by the provider's id of the message, always
-- within one tenant.
create index notifications_provider_message_idx
    on notifications (tenant_id, provider_message_id) where provider_message_id is not null;

-- Every finished status is subject to content retention.
drop index notifications_retention_idx;
create index notifications_retention_idx
    on notifications (updated_at)
    where status in ('sent', 'delivered', 'read', 'failed', 'bounced', 'suppressed', 'cancelled')
      and content_redacted_at is null;

-- One row per accepted provider event. `event_key` is a SHA-256 (hex) of
-- what identifies the event at the provider (SendGrid's `sg_event_id`;
-- Twilio's message SID and status; WhatsApp's wamid and status), so a
-- repeated callback finds its row and changes nothing. No recipient, no
-- content: only ids, the event's name, an error code and the times.
create table provider_events (
    id bigint generated always as identity primary key,
    tenant_id uuid not null references tenants (id),
    notification_id uuid not null references notifications (id) on delete cascade,
    provider_id uuid references provider_configs (id) on delete set null,
    provider text not null check (provider in ('sendgrid', 'twilio', 'whatsapp')),
    event_key text not null check (length(event_key) = 64),
    event text not null check (length(event) between 1 and 32),
    -- The status the event moved the notification to; null when it changed
    -- nothing (a late or repeated report).
    status text check (status in ('delivered', 'read', 'failed', 'bounced')),
    provider_message_id text check (length(provider_message_id) <= 255),
    error_code text check (length(error_code) <= 32),
    occurred_at timestamptz,
    received_at timestamptz not null default now(),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint provider_events_key unique (tenant_id, provider, event_key)
);
create index provider_events_notification_idx on provider_events (notification_id, received_at);
create trigger provider_events_updated_at before update on provider_events
    for each row execute function set_updated_at();

-- When the subscriber last wrote to the organisation on WhatsApp (which
-- opens the 24-hour customer-service window for free-form messages).
alter table subscribers add column whatsapp_last_inbound_at timestamptz;
create index subscribers_whatsapp_idx on subscribers (tenant_id, whatsapp) where whatsapp is not null;
