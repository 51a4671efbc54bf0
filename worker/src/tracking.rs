//! Carriers whose shipments the platform tracks: they deliver no
//! notification, they are polled for status (UPS's Track API, [`ups`]).
//! A status change becomes a notice sent through the delivery providers.

pub mod ups;
