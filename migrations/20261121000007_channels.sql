-- SMS, push and WhatsApp join email and in-app.
alter table notifications drop constraint notifications_channel_check;
alter table notifications add constraint notifications_channel_check
    check (channel in ('email', 'sms', 'push', 'whatsapp', 'inapp'));
