//! Every benchmark mode, small and quick, so that the benchmark cannot rot: the real
//! servers it starts (Alcove on SQLite and PostgreSQL, and the bare relay), the real load,
//! and the tables it prints, with their ratios to the floor.

use std::process::Command;

#[test]
fn every_mode_runs_small_and_prints_its_table() {
    let out = Command::new(env!("CARGO_BIN_EXE_alcove-bench"))
        .args(["all", "--smoke"])
        .env(
            "ALCOVE_BENCH_PG_URL",
            std::env::var("ALCOVE_TEST_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        )
        .output()
        .expect("alcove-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "alcove-bench all --smoke failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    for heading in [
        "## relay:",
        "## flood:",
        "## joins:",
        "## connections:",
        "## signins:",
        "## start:",
        "## api:",
        "## calls:",
    ] {
        assert!(stdout.contains(heading), "no {heading} section:\n{stdout}");
    }
    // Each mode printed its figures (not just a heading): a table row per server measured.
    let rows = |prefix: &str| stdout.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(
        rows("| bare relay (floor) |"),
        3,
        "relay, joins and calls each measured the floor:\n{stdout}"
    );
    assert_eq!(
        rows("| Alcove ÷ floor |"),
        3,
        "and printed Alcove's ratio to it:\n{stdout}"
    );
    assert_eq!(rows("| Alcove |"), 3, "{stdout}");
    assert_eq!(
        rows("| one client flooding |") + rows("| flooding ÷ quiet |"),
        2,
        "flood measured the others while one client flooded:\n{stdout}"
    );
    assert!(
        rows("| SQLite |") >= 3 && rows("| PostgreSQL |") >= 3,
        "start and api ran on both databases:\n{stdout}"
    );
    // No figure came out empty: a ratio or a percentile of nothing prints as NaN or "–".
    for l in stdout.lines().filter(|l| l.starts_with("| Alcove")) {
        assert!(
            !l.contains("NaN") && !l.contains('–'),
            "an empty figure: {l}"
        );
    }
}
