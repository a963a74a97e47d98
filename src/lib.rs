//! calattach: CalDAV Managed Attachments (RFC 8607) in front of any CalDAV server.
//!
//! The binary (`src/main.rs`) only parses the command line; everything lives here so the
//! benchmarks and tests can reach it. See DESIGN.md (`docs/design.md`) for the picture.
#![forbid(unsafe_code)]

pub mod attach;
pub mod body;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod gc;
pub mod ical;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod options;
pub mod props;
pub mod rfc6266;
pub mod router;
pub mod server;
pub mod slots;
pub mod state;
pub mod store;
pub mod upstream;
pub mod web;
