//! The platform's system tests, in `tests/it/`: each starts the api, worker
//! and scheduler through `testkit` against real Postgres, Redis and SMTP and
//! drives them from outside. The operator console's browser scenarios are in
//! `console/`. This library is empty.
