//! Schemathesis against the real binary: it reads `/openapi.json`, generates
//! requests from the schemas (valid and invalid), and checks that no answer is
//! a 5xx and every documented answer matches its schema.
//!
//! Needs `schemathesis` on PATH (`python3 -m pip install --user schemathesis`;
//! `.ci/run` installs it). Without it the test prints a loud skip notice and
//! passes, unless the environment variable `CI` is set (to anything but ``,
//! `0` or `false`): then it fails.

mod support;

use std::process::{Child, Command};

fn in_ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"),
        Err(_) => false,
    }
}

/// The schemathesis executable: on PATH, or where `pip install --user` puts it.
fn schemathesis() -> Option<String> {
    let mut candidates = vec!["schemathesis".to_string()];
    if let Ok(home) = std::env::var("HOME") {
        candidates.push(format!("{home}/.local/bin/schemathesis"));
    }
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
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
    let Some(st) = schemathesis() else {
        let msg = "schemathesis is not installed (python3 -m pip install --user schemathesis)";
        if in_ci() {
            panic!("CI is set and {msg}");
        }
        eprintln!("\n*** SKIPPED schemathesis test: {msg} ***\n");
        return;
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
