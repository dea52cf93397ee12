//! chime's integration tests, one test binary (`cargo test -p chime --test it`): every module
//! below was once a binary of its own, and `support` is their shared harness, compiled once.
//!
//! Run one area with a filter, e.g. `cargo test -p chime --test it store_conformance::` or
//! `cargo nextest run -p chime -E 'binary(it) and test(/^fuzz::/)'`.

mod support;

mod api;
mod bench_smoke;
mod cli_api;
mod cli_listen;
mod cli_verify;
mod delivery;
mod etiquette;
mod fuzz;
mod hostile_input;
mod postgres_faults;
mod process;
mod store_conformance;
