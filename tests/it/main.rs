//! Integration tests: the real `calattach` binary in front of real CalDAV
//! servers (Radicale, Xandikos, Baïkal) and a real S3 server (moto), all on
//! 127.0.0.1 with throw-away state. See `harness/` for how they start.
//!
//! Needs the project venv (`scripts/venv.sh`; `scripts/test` runs it).

mod harness;

mod access;
mod attach;
mod attach_errors;
mod attach_races;
mod attacks;
mod baikal;
mod bodies;
mod client;
mod config;
mod deploy;
mod failure;
mod faults;
mod gc;
mod group_commit;
mod hardening;
mod https;
mod inline;
mod internal_answers;
mod limits;
mod logs;
mod metrics;
mod props;
mod scheduling;
mod servers;
mod streaming;
mod transparency;
mod uploads;
mod upstream_pool;
mod webpage;
