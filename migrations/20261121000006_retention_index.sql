-- Suppressed notifications are finished too, and in-app messages still in an
-- inbox are kept: the retention sweep's index follows.
drop index notifications_retention_idx;
create index notifications_retention_idx
    on notifications (updated_at)
    where status in ('sent', 'failed', 'suppressed') and content_redacted_at is null;
