//! A CPU quota on one process, through the kernel's cgroup `cpu` controller (v2's `cpu.max`,
//! or v1's CFS quota where the `cpu` hierarchy is mounted on its own). `--server-cpus` uses it
//! to give every `chime serve` the same share of the machine, so that the `nodes` scenario
//! compares one, two and three nodes on equal budgets each, as on machines with cores of
//! their own, instead of nodes that take each other's cores.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The scheduler's accounting period the quota is a share of, in microseconds.
const PERIOD_US: u64 = 100_000;

/// A cgroup of its own with a CPU quota; removed when dropped (once its processes are gone).
pub struct CpuCap {
    dir: PathBuf,
}

/// Where a capped cgroup is made (a v1 `cpu` hierarchy of its own, or the v2 root) and the
/// files, with their values, that set its quota of `quota_us` per period.
fn quota_files(quota_us: u64) -> anyhow::Result<(&'static Path, Vec<(&'static str, String)>)> {
    let v1 = Path::new("/sys/fs/cgroup/cpu");
    if v1.join("cpu.cfs_quota_us").exists() {
        let files = vec![
            ("cpu.cfs_period_us", PERIOD_US.to_string()),
            ("cpu.cfs_quota_us", quota_us.to_string()),
        ];
        return Ok((v1, files));
    }
    let v2 = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "cpu") {
        // Children get the controller only once the parent hands it down.
        let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
        return Ok((v2, vec![("cpu.max", format!("{quota_us} {PERIOD_US}"))]));
    }
    bail!(
        "no cgroup `cpu` controller to cap a process with (neither /sys/fs/cgroup/cpu nor cgroup v2 with `cpu`)"
    )
}

impl CpuCap {
    /// A new cgroup named `name` whose processes together get at most `cpus` CPUs.
    pub fn new(name: &str, cpus: f64) -> anyhow::Result<Self> {
        let quota_us = (cpus * PERIOD_US as f64).round() as u64;
        let (root, files) = quota_files(quota_us)?;
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "making cgroup {} (--server-cpus needs root or a delegated cgroup)",
                dir.display()
            )
        })?;
        let cap = CpuCap { dir };
        for (file, value) in files {
            let path = cap.dir.join(file);
            std::fs::write(&path, &value)
                .with_context(|| format!("writing {value} to {}", path.display()))?;
        }
        Ok(cap)
    }

    /// Moves the process `pid`, with all its threads, under the quota.
    pub fn add(&self, pid: i32) -> anyhow::Result<()> {
        let path = self.dir.join("cgroup.procs");
        std::fs::write(&path, pid.to_string())
            .with_context(|| format!("moving process {pid} into {}", path.display()))
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // Fails while a process is still inside (a server dropped without `stop`): the empty
        // directory is then left behind, harmless.
        let _ = std::fs::remove_dir(&self.dir);
    }
}
