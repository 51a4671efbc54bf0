-- Alert rules read one organisation's per-minute rollups over their window
-- (`shared::alerts::measure`): index them by organisation and minute, so
-- a pass no longer scans every organisation's rows of each window.
create index queue_minutes_tenant_minute_idx on queue_minutes (tenant_id, minute);
