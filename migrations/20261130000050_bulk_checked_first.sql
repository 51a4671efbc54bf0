-- A CSV bulk job's file is checked whole (header against the mapping,
-- UTF-8, quotes, at least one row) before any row is committed, so the rows
-- committed after that are due at once and sending overlaps the parse. A
-- job that started committing before files were checked first keeps holding
-- its notifications (`run_at = 'infinity'`) until its file has parsed.
alter table bulk_jobs add column checked_at timestamptz;
