//! The web client's own unit tests (`web/tests/*.test.js`, Node's built-in test runner),
//! run as part of the server's suite: the verification code's commit-then-reveal exchange
//! among them. Node.js is required (scripts/test installs Debian's nodejs when missing).

use std::{path::Path, process::Command};

#[test]
fn the_web_clients_unit_tests_pass_under_node() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    // The files by name and the TAP reporter: what Node's runner does with a folder, and
    // what it prints by default, differ between versions.
    let mut files: Vec<String> = std::fs::read_dir(web.join("tests"))
        .expect("web/tests")
        .filter_map(|e| e.ok())
        .map(|e| format!("tests/{}", e.file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".test.js"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no web/tests/*.test.js");
    let out = Command::new("node")
        .arg("--test")
        .arg("--test-reporter=tap")
        .args(&files)
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
        passed >= 10,
        "expected the verification tests to run:\n{report}"
    );
}
