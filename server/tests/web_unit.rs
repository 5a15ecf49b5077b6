//! The web client's own unit tests (`web/tests/*.test.js`, Node's built-in test runner),
//! run as part of the server's suite: the verification code's commit-then-reveal exchange
//! among them. Node.js is required (scripts/test installs Debian's nodejs when missing).

use std::{path::Path, process::Command};

#[test]
fn the_web_clients_unit_tests_pass_under_node() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    let out = Command::new("node")
        .arg("--test")
        .arg("tests/")
        .current_dir(&web)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "Node.js is required for the web client's unit tests (apt-get install nodejs): {e}"
            )
        });
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Something ran: the runner reports its counts.
    let passed = report
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        passed >= 8,
        "expected the verification tests to run:\n{report}"
    );
}
