//! `chime-bench` end to end at a tiny size, through the built binaries: the harness starts its
//! servers, receiver and load generator, and reports what it measured. A correctness test of
//! the harness, not a timed assertion: no number is compared with a target here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The `chime` binary the bench runs as its server, built for this test.
///
/// Cargo gives a test `CARGO_BIN_EXE_*` only for its own package's binaries, and
/// `cargo test -p chime-bench` builds chime's library (a dependency) but not its binary.
/// So the test builds it: `cargo build -p chime --bin chime` with this test's profile, into
/// the same target directory, where it lands next to `chime-bench`. Run every time rather
/// than only when the file is missing, so a binary left over from older sources is never
/// measured; when it is up to date (as after `cargo test --workspace`, which builds it) this
/// is a no-op of a second. Cargo holds its build lock only while compiling, not while the
/// tests run, so the nested build does not wait for the outer one. (An artifact
/// dependency would say this in Cargo.toml, but it needs nightly's `-Z bindeps`.)
///
/// The nested cargo does not get the variables cargo set for this test (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, …): a build script that reruns when one changes (ring's does, for
/// `CARGO_MANIFEST_DIR`) would see chime-bench's values, rebuild, and make the next outer
/// build rebuild it back, every run.
fn chime_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let bench = Path::new(env!("CARGO_BIN_EXE_chime-bench"));
        let exe = bench.with_file_name(format!("chime{}", std::env::consts::EXE_SUFFIX));
        // target/<profile dir>/chime-bench; the dev profile's directory is `debug`.
        let profile = match bench
            .parent()
            .and_then(Path::file_name)
            .and_then(|d| d.to_str())
        {
            Some("debug") | None => "dev",
            Some(dir) => dir,
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let set_for_this_test = key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .contains(&key.as_ref());
            if set_for_this_test {
                build.env_remove(key.as_ref());
            }
        }
        let status = build
            .args([
                "build",
                "--quiet",
                "-p",
                "chime",
                "--bin",
                "chime",
                "--profile",
                profile,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p chime --bin chime");
        assert!(
            status.success(),
            "cargo build -p chime --bin chime failed: {status}"
        );
        assert!(
            exe.is_file(),
            "cargo built chime, but not at {} next to chime-bench (a --target-dir or --target \
             given to cargo test is not passed on; CARGO_TARGET_DIR is)",
            exe.display()
        );
        exe
    })
}

#[test]
fn bench_runs_two_scenarios_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_chime-bench"))
        .args(["--quick", "--events", "500", "--fanout-events", "20"])
        .args(["--fanout-endpoints", "10", "--concurrency", "8"])
        .args(["throughput", "fanout"])
        .arg("--data-root")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .arg("--server-exe")
        .arg(chime_exe())
        .env_remove("CHIME_LOG")
        .output()
        .expect("run chime-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chime-bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("throughput"), "{stdout}");
    assert!(stdout.contains("targets:"), "{stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in [
        "chime_version",
        "command",
        "timestamp",
        "machine",
        "plan",
        "ceiling",
        "scenarios",
        "targets",
    ] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(report["ceiling"]["posts"].as_u64().unwrap() == 500);
    assert!(report["ceiling"]["posts_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["ceiling_after"]["posts"].as_u64().unwrap() == 500);

    let scenarios = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["throughput", "fanout"]);
    for (s, expected) in scenarios.iter().zip([500u64, 20 * 10]) {
        for key in [
            "accepted_per_s",
            "delivered_per_s",
            "publish_latency_ms",
            "e2e_latency_ms",
            "cpu_s_per_1k_deliveries",
            "server_peak_rss_mb",
            "errors",
            "ratio_to_ceiling",
            // null when a tiny run's CPU rounds to nothing
            "cpu_in_posts_per_delivery",
        ] {
            assert!(s.get(key).is_some(), "missing {key}: {s}");
        }
        // Compared with the ceilings measured on either side of it.
        let before = s["ceiling_before_per_s"].as_f64().unwrap();
        let after = s["ceiling_after_per_s"].as_f64().unwrap();
        assert!(before > 0.0 && after > 0.0, "{s}");
        let ratio = s["delivered_per_s"].as_f64().unwrap() / ((before + after) / 2.0);
        assert!(
            (s["ratio_to_ceiling"].as_f64().unwrap() - ratio).abs() <= 0.006,
            "{s}"
        );
        assert_eq!(s["deliveries_completed"].as_u64(), Some(expected), "{s}");
        assert_eq!(s["errors"].as_u64(), Some(0), "{s}");
        assert!(s["delivered_per_s"].as_f64().unwrap() > 0.0, "{s}");
        assert!(
            s["e2e_latency_ms"]["count"].as_u64().unwrap() == expected,
            "{s}"
        );
        assert!(s["server_peak_rss_mb"].as_f64().unwrap() > 0.0, "{s}");
    }
    assert_eq!(
        scenarios[1]["ceiling_before_per_s"], scenarios[0]["ceiling_after_per_s"],
        "the ceiling between two scenarios serves both"
    );
    // Each scenario's data directory is removed after its server stops.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("chime-bench-"))
        .collect();
    assert!(left.is_empty(), "data directories left behind: {left:?}");
}

#[test]
fn bench_rejects_bad_sizes_as_usage_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_chime-bench"))
        .args(["--concurrency", "0", "throughput"])
        .output()
        .expect("run chime-bench");
    assert_eq!(out.status.code(), Some(2));
}

/// Without --server-exe the server is the `chime` next to `chime-bench`; a copy of
/// `chime-bench` alone in a directory says how to get one, as a usage error.
#[test]
fn bench_without_a_chime_beside_it_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let lone = dir
        .path()
        .join(format!("chime-bench{}", std::env::consts::EXE_SUFFIX));
    std::fs::copy(env!("CARGO_BIN_EXE_chime-bench"), &lone).unwrap();
    let out = Command::new(&lone)
        .args(["--no-ceiling", "throughput"])
        .output()
        .expect("run chime-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cargo build --release"), "{stderr}");
    assert!(stderr.contains("--server-exe"), "{stderr}");
}
