-- One send request can become several notifications (one per channel, one
-- per device for push). They share `send_id`, the id of the first, which
-- also carries the request's idempotency key. Null reads as the row's own id.
alter table notifications add column send_id uuid;
create index notifications_send_id_idx on notifications (tenant_id, send_id)
    where send_id is not null;
