-- What a tenant tells us about each subscriber: where to reach them (email,
-- phone, WhatsApp, FCM push tokens), how to speak to them (locale, time zone,
-- name) and free-form data. The API validates every value; the checks here
-- are a second wall.
alter table subscribers
    add column email text check (length(email) between 3 and 254),
    add column phone text check (phone ~ '^\+[1-9][0-9]{7,14}$'),
    add column whatsapp text check (whatsapp ~ '^\+[1-9][0-9]{7,14}$'),
    add column push_tokens text[] not null default '{}'
        check (cardinality(push_tokens) <= 10 and array_position(push_tokens, null) is null),
    add column locale text check (length(locale) between 2 and 35),
    add column timezone text check (length(timezone) between 1 and 64),
    add column first_name text check (length(first_name) between 1 and 200),
    add column last_name text check (length(last_name) between 1 and 200),
    add column data jsonb not null default '{}'::jsonb check (jsonb_typeof(data) = 'object');

-- Deleting a subscriber erases the row (contact points, preferences and
-- real-time events go with it) and frees the external id. Their
-- notifications stay as delivery records, detached from the subscriber; an
-- in-app notification without a subscriber has left every inbox.
alter table notifications drop constraint notifications_inapp_has_subscriber;
alter table notifications add constraint notifications_inapp_has_subscriber
    check (channel <> 'inapp' or subscriber_id is not null or deleted_at is not null);

-- Finds a subscriber's notifications on delete (and serves the foreign key).
create index notifications_subscriber_idx on notifications (subscriber_id)
    where subscriber_id is not null;
