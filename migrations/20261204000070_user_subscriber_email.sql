-- A platform user's subscriber carries the user's sign-in address as its
-- email, so notices (shipment updates, BAA reminders) are emailed to them.
-- Users created before now have a subscriber without one: give it the
-- sign-in address. A subscriber that stores an address of its own keeps it.
update subscribers s
set email = u.email
from users u
where u.tenant_id = s.tenant_id
  and s.external_id = u.id::text
  and s.email is null;
