-- A send held back (the subscriber's quiet hours, or every provider paused)
-- is `deferred` until `run_at`, and is swept like a queued one. A caller may
-- cancel a send that has not gone out.
drop index notifications_due_idx;
create index notifications_due_idx
    on notifications (channel, run_at) where status in ('queued', 'deferred', 'sending');
