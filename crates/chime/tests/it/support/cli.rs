//! The `chime` binary as a user runs it: a command with a clean environment and a memory cap,
//! as a `std::process::Command` (for `ChildProcess` and `output()`) or an `assert_cmd` one.

use std::process::Command;
use std::time::Duration;

use super::memory::cap_memory;

/// Removes every `CHIME_*` variable from `cmd`'s environment, so a developer's or CI's
/// environment cannot leak into a test.
pub fn without_chime_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CHIME_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The `chime` binary: no `CHIME_*` variables, `NO_COLOR`, and memory capped at
/// `memory::CHILD_MEMORY_CAP`. Every chime process the tests start is made here.
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chime"));
    without_chime_env(&mut cmd).env("NO_COLOR", "1");
    cap_memory(&mut cmd);
    cmd
}

/// `command()` for assert_cmd, with a 30 s timeout.
pub fn chime() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::from_std(command());
    cmd.timeout(Duration::from_secs(30));
    cmd
}
