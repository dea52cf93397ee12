//! `chime bench` end to end at a tiny size, through the built binary: the harness starts its
//! servers, receiver and load generator, and reports what it measured. A correctness test of
//! the harness, not a timed assertion: no number is compared with a target here.

use serde_json::Value;

use crate::support::cli::command;

#[test]
fn bench_runs_two_scenarios_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = command()
        .args([
            "bench",
            "--quick",
            "--events",
            "500",
            "--fanout-events",
            "20",
        ])
        .args(["--fanout-endpoints", "10", "--concurrency", "8"])
        .args(["throughput", "fanout"])
        .arg("--data-root")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run chime bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chime bench failed ({}):\n{stdout}\n{stderr}",
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
    let out = command()
        .args(["bench", "--concurrency", "0", "throughput"])
        .output()
        .expect("run chime bench");
    assert_eq!(out.status.code(), Some(2));
}
