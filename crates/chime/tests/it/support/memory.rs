//! Memory caps (RLIMIT_DATA), so an unbounded allocation fails a test instead of exhausting
//! the machine.
//!
//! `cap_this_process_memory` limits the whole test process. Under `cargo nextest` each test is
//! a process of its own, capped when it asks; under `cargo test` every test shares one process,
//! which is capped from the first test that asks on: 3 GiB holds the whole suite, so that is
//! harmless. `cap_memory` caps a child process, and `support::cli` applies it to every chime
//! child the tests start.

/// Most memory (RLIMIT_DATA: heap and private mappings) a chime process started by a fault
/// test may use, and that a test process running servers in-process may use. chime needs
/// about 100 MB; an unbounded allocation (the kind a hostile filter or schema once caused)
/// then fails the test with an allocation error instead of exhausting the machine.
pub const CHILD_MEMORY_CAP: u64 = 1 << 30;
pub const TEST_MEMORY_CAP: u64 = 3 << 30;

fn set_data_limit(bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads the struct and changes only this process's limits.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Caps the memory of a process about to be spawned by `cmd` at `CHILD_MEMORY_CAP`.
pub fn cap_memory(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only calls setrlimit,
    // which is async-signal-safe, and allocates nothing.
    unsafe { cmd.pre_exec(|| set_data_limit(CHILD_MEMORY_CAP)) }
}

/// Caps this test process's memory at `TEST_MEMORY_CAP` (once; later calls do nothing).
pub fn cap_this_process_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| set_data_limit(TEST_MEMORY_CAP).expect("setrlimit(RLIMIT_DATA)"));
}
