-- Alerts may text people: an `sms` channel beside in-app, email and the
-- outgoing calls.
alter table alert_deliveries drop constraint alert_deliveries_channel_check;
alter table alert_deliveries add constraint alert_deliveries_channel_check
    check (channel in ('in_app', 'email', 'sms', 'webhook', 'slack', 'pagerduty'));
