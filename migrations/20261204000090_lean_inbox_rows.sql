-- In-app messages are written once, already in their inbox, by the statement
-- that creates them; each index entry is a cost on that path. Messages still
-- in an inbox are never redacted (the retention sweep skips them), so the
-- sweep's index no longer holds them.
drop index notifications_retention_idx;
create index notifications_retention_idx
    on notifications (updated_at)
    where status in ('sent', 'delivered', 'read', 'failed', 'bounced', 'suppressed', 'cancelled')
      and content_redacted_at is null
      and not (channel = 'inapp' and status = 'sent' and deleted_at is null);
