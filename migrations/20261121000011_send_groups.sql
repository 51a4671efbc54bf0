-- One send request can become several notifications (one per channel, one
-- per device for push). They share `send_id`, the id of the first, which
-- also carries the request's idempotency key.
alter table notifications add column send_id uuid;
update notifications set send_id = id where send_id is null;
alter table notifications alter column send_id set not null;
create index notifications_send_id_idx on notifications (tenant_id, send_id);
