//! Providers: the outside services a notification is delivered through, one
//! module per provider.

pub mod email;
