-- Every in-app placement counts its subscribers' unread entries and moves
-- their event numbers on in one statement, and a shared accept of a few
-- templated sends runs it once per commit. Sent as a plain statement it
-- was planned on every call (0.35-0.65 ms of planning each), and its plan
-- depended on what the planner guessed of tables that grow from empty: on
-- a fresh database with no statistics yet the unread count ran as a
-- sequential scan of `notifications` (5.3 ms a statement at 20,000 rows,
-- measured with auto_explain), and the event-number update hash-joined a
-- sequential scan of every subscriber of the organisation.
--
-- Both now run inside PL/pgSQL functions, which keep their plans per
-- connection, with sequential scans, hash joins and merge joins off: the
-- only plans left probe `notifications_subscriber_idx` and
-- `subscribers_pkey` once per named subscriber, right at any table size.
-- The functions run as their caller, so row-level security applies as
-- before; the counts and numbers are exactly those of the statements they
-- replace.

-- Unread, unarchived entries of each of `p_subscribers`' inboxes; a
-- subscriber without any is absent.
create function inbox_unread_counts(p_tenant uuid, p_subscribers uuid[])
returns table (subscriber_id uuid, unread bigint)
language plpgsql stable
set enable_seqscan = off
set enable_hashjoin = off
set enable_mergejoin = off
as $$
#variable_conflict use_column
begin
    return query
    select n.subscriber_id, count(*)
    from notifications n
    where n.tenant_id = p_tenant and n.subscriber_id = any(p_subscribers)
      and n.channel = 'inapp' and n.status = 'sent' and n.deleted_at is null
      and n.read_at is null and n.archived_at is null
    group by n.subscriber_id;
end
$$;

-- Announces new inbox entries already written in the caller's transaction:
-- for each subscriber (`p_counts` entries, `p_ids` their notifications),
-- moves the event number on by the entries and the count, and stores one
-- `p_kind` row holding the ids and the unread count. Returns, per
-- subscriber, the event number now, the external id, the unread count and
-- the stored rows' time.
create function inbox_announce(
    p_tenant uuid, p_subscribers uuid[], p_counts int8[], p_ids jsonb[], p_kind text
)
returns table (id uuid, event_seq bigint, external_id text, unread bigint, at timestamptz)
language plpgsql
set enable_seqscan = off
set enable_hashjoin = off
set enable_mergejoin = off
as $$
#variable_conflict use_column
begin
    return query
    with c as (
        select * from unnest(p_subscribers, p_counts, p_ids) as c(id, k, ids)
    ), moved as (
        update subscribers s set event_seq = s.event_seq + c.k + 1
        from c where s.id = c.id and s.tenant_id = p_tenant
        returning s.id, s.event_seq, s.external_id, c.k, c.ids
    ), counted as (
        select m.*, coalesce(u.unread, 0) as unread
        from moved m
        left join inbox_unread_counts(p_tenant, p_subscribers) u on u.subscriber_id = m.id
    ), stored as (
        insert into subscriber_events (subscriber_id, seq, last_seq, tenant_id, kind, payload)
        select counted.id, counted.event_seq - counted.k, counted.event_seq, p_tenant, p_kind,
               jsonb_build_object('ids', counted.ids, 'unread', counted.unread)
        from counted
        returning created_at
    )
    select counted.id, counted.event_seq, counted.external_id, counted.unread,
           (select max(stored.created_at) from stored)
    from counted;
end
$$;
