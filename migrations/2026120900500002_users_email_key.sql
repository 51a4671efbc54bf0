-- Sign-in finds a user by email across organisations. Under row-level
-- security a condition applying a function to a column (`lower(email)`)
-- is checked after the wall and cannot use an index, so sign-in read the
-- whole table. The lowered address is kept in a column of its own, and the
-- unique index (same name, same rule) is on that column.
alter table users add column email_key text generated always as (lower(email)) stored;
drop index users_email_key;
create unique index users_email_key on users (email_key);
