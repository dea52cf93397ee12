//! chime's integration tests, one test binary (`cargo test -p chime --test it`): every module
//! below was once a binary of its own, and `support` is their shared harness, compiled once.
//!
//! Run one area with a filter, e.g. `cargo test -p chime --test it store_conformance::` or
//! `cargo nextest run -p chime -E 'binary(it) and test(/^fuzz::/)'`.
//!
//! `cargo test` runs every test on threads of one process, `cargo nextest` each in a process
//! of its own; both must pass. So a test changes nothing process-wide: no
//! `std::env::set_var` (a child gets its variables through `Command::env`), no fixed paths
//! (a `tempfile::tempdir()` each), no fixed ports (127.0.0.1:0). The one process-wide
//! setting is `support::cap_this_process_memory`, the same for every test that asks.

mod support;

mod api;
mod brokers;
mod cli_api;
mod cli_listen;
mod cli_verify;
mod delivery;
mod etiquette;
mod fuzz;
mod hostile_input;
mod metrics;
mod openapi;
mod partitions;
mod postgres_faults;
mod process;
mod reach;
mod sources;
mod store_conformance;
mod traces;
mod transformations;
mod ui_browser;
mod ui_http;
