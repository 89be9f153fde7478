//! Schemathesis against the real binary: it reads `/openapi.json`, generates
//! requests from the schemas (valid and invalid), and checks that no answer is
//! a 5xx and every documented answer matches its schema.
//!
//! Needs `schemathesis` on PATH (`python3 -m pip install
//! --user schemathesis`; `./test.sh` installs it). Without it the test fails,
//! naming the install line: it never passes without running.

mod support;

use std::process::{Child, Command};

/// The schemathesis executable on PATH (`./test.sh` puts pip's user
/// directory, ~/.local/bin, on it).
fn schemathesis() -> Option<String> {
    let st = "schemathesis".to_string();
    Command::new(&st)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(st)
}

/// Kills the server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data_dir: &std::path::Path) -> (Server, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_offer-engine"));
    cmd.args([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--synthetic-members",
        "500",
    ])
    .env("OFFER_ENGINE__DURABILITY__DATA_DIR", data_dir)
    .env("OFFER_ENGINE__SERVER__WORKERS", "2");
    let (child, base) = support::spawn_server(cmd);
    (Server(child), base)
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    // No skipping: a test that passes without running is a defect.
    let Some(st) = schemathesis() else {
        panic!(
            "tests/schemathesis.rs needs schemathesis on PATH and cannot run without: install \
             with `python3 -m pip install --user schemathesis`, or run the tests through \
             ./test.sh, which installs it"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = start(dir.path());
    let report = dir.path().join("schemathesis-report");
    let out = Command::new(st)
        .args([
            "run",
            &format!("{base}/openapi.json"),
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            "25",
            "--workers",
            "2",
            "--seed",
            "1",
            "--report-dir",
        ])
        .arg(&report)
        .env("NO_COLOR", "1")
        // Its cache (.schemathesis/) goes into the working directory: keep it out of the repo.
        .current_dir(dir.path())
        .output()
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    // The summary, for the log (`cargo test -- --nocapture`).
    let summary = stdout.find("SUMMARY").map_or("", |i| &stdout[i..]);
    eprintln!("{summary}");
    // It really tested the API, rather than failing to load the schema quietly.
    assert!(stdout.contains("/v1/offers"), "{stdout}");
}
