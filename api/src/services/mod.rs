//! The rules of each feature, apart from HTTP: what a request may do and
//! what it writes. Routes ([`crate::routes`]) parse a request, call one
//! service function and shape its answer; services call the db layer
//! ([`shared::db`]) and each other, never a route.
//!
//! * [`alerts`]: listing the alerts a caller may see.
//! * [`audit`]: which audit rows a filter names, and exporting them as
//!   CSV.
//! * [`batches`]: rules every batch follows, whichever route creates it;
//!   creating a batch and adding its chunks.
//! * [`broadcasts`]: system messages to every organisation's subscribers.
//! * [`bulk`]: CSV uploads: the form checked, the file stored, the job
//!   queued, and replays under an idempotency key.
//! * [`invitations`]: inviting someone, accepting an invitation, what
//!   follows an invitation's commit, and listing the invitations a caller
//!   may manage.
//! * [`lookups`]: reference values platform admins edit.
//! * [`notifications`]: sending a notification, raw (checked in its
//!   `validate`) or from a template (rendered per channel in its `plan`),
//!   committed alone or in a shared commit; a notification's status.
//! * [`organizations`]: the rules an organisation's fields follow, which
//!   organisation a platform admin acts on, listing and changing them.
//! * [`permissions`]: permission names, the users a change names, how a
//!   change is recorded, and delegating permissions.
//! * [`providers`]: checking, sealing, adding and replacing provider
//!   configs.
//! * [`reports`]: the rules a report schedule follows, which template a
//!   report names, computing and auditing a report, and the forecast.
//! * [`sessions`]: signing in, refreshing a session's tokens, revoking
//!   sessions.
//! * [`shipments`]: the rules a tracked shipment's fields follow, and
//!   starting to track one.
//! * [`topics`]: finding a topic by key, and sends to a topic or to the
//!   whole organisation.
//! * [`users`]: the rules a platform user's fields follow, creating and
//!   listing users, and setting a user's password.
//! * [`workflows`]: saving workflow definitions, triggering runs and
//!   listing them.

pub mod alerts;
pub mod audit;
pub mod batches;
pub mod broadcasts;
pub mod bulk;
pub mod invitations;
pub mod lookups;
pub mod notifications;
pub mod organizations;
pub mod permissions;
pub mod providers;
pub mod reports;
pub mod sessions;
pub mod shipments;
pub mod topics;
pub mod users;
pub mod workflows;
