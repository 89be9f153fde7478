//! The README's examples, run as written, so that it cannot rot again.
//!
//! Every ```sh block of README.md that calls `localhost:8080/v1/offers` is run
//! with `sh -c` (curl, as a reader would) against the real binary started on
//! its defaults (port 0, a fresh data dir), `localhost:8080` replaced by the
//! server's address. The answer is compared with the ```json block that
//! follows it in the README: a problem document must be equal to it, field
//! for field; a decision must have every field the README shows (in the
//! answer and in its offers) and the same member, model, experiments and
//! fallback flag. The README's event flows (```sh blocks that post to
//! `/events` with real ids, not `DECISION_ID` placeholders: the points upgrade
//! accepted and refunded) run too; their output, a sequence of JSON objects,
//! is compared with the ```text block that follows: the same objects with the
//! same fields and values, except `lsn` (any number) and `points` balances,
//! which must move by the documented amounts. Examples must not carry fixed dates (they would fail once
//! the date passes): departures and campaign dates are computed with `date`.
//!
//! Also: the README's two commands are the ones that exist, and
//! `serve --help` says what the README promises.
//!
//! Needs `curl` on PATH (Debian/Ubuntu: `apt-get install curl`; `./test.sh`
//! installs it); fails without it.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command};

use serde_json::Value;

fn readme() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
    std::fs::read_to_string(path).expect("README.md reads")
}

/// The fenced blocks of a Markdown text: (info string, body).
fn blocks(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in md.lines() {
        match &mut open {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    open = Some((info.trim().to_string(), String::new()));
                }
            }
            Some((_, body)) => {
                if line.trim_end() == "```" {
                    out.push(open.take().unwrap());
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    out
}

/// The README's checkout examples: (command, documented answer).
fn offer_examples(md: &str) -> Vec<(String, Value)> {
    let b = blocks(md);
    let mut out = Vec::new();
    for (i, (info, cmd)) in b.iter().enumerate() {
        if info != "sh" || !cmd.contains("localhost:8080/v1/offers") {
            continue;
        }
        let answer = b[i + 1..]
            .iter()
            .take_while(|(info, _)| info != "sh")
            .find(|(info, _)| info == "json")
            .unwrap_or_else(|| panic!("no ```json answer follows the example:\n{cmd}"));
        let doc: Value = serde_json::from_str(&answer.1)
            .unwrap_or_else(|e| panic!("the documented answer is not JSON ({e}):\n{}", answer.1));
        out.push((cmd.clone(), doc));
    }
    out
}

/// The README's event flows: (command, documented output).
fn flow_examples(md: &str) -> Vec<(String, String)> {
    let b = blocks(md);
    let mut out = Vec::new();
    for (i, (info, cmd)) in b.iter().enumerate() {
        if info != "sh"
            || !cmd.contains("localhost:8080")
            || !cmd.contains("/events")
            || cmd.contains("DECISION_ID")
        {
            continue;
        }
        let answer = b
            .get(i + 1)
            .filter(|(info, _)| info == "text")
            .unwrap_or_else(|| panic!("no ```text output follows the event flow:\n{cmd}"));
        out.push((cmd.clone(), answer.1.clone()));
    }
    out
}

/// The JSON objects of a text, one after the other.
fn json_values(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("not a sequence of JSON objects ({e}):\n{text}"))
}

/// Checks a flow's output against the documented one.
fn check_flow(cmd: &str, actual: &[Value], doc: &[Value]) {
    assert_eq!(actual.len(), doc.len(), "{cmd}\n{actual:?}\n{doc:?}");
    for (a, d) in actual.iter().zip(doc) {
        let (Some(ao), Some(dobj)) = (a.as_object(), d.as_object()) else {
            panic!("expected objects: {a} / {d}");
        };
        let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(ao),
            keys(dobj),
            "fields differ from the README: {a} / {d}"
        );
        for (k, v) in dobj {
            match k.as_str() {
                "lsn" => assert!(ao[k].is_u64(), "{a}"),
                "points" => assert!(ao[k].is_u64(), "{a}"),
                _ => assert_eq!(&ao[k], v, "`{k}` differs from the README: {a} / {d}"),
            }
        }
    }
    let moves = |vs: &[Value]| {
        let p: Vec<i64> = vs
            .iter()
            .filter_map(|v| v.get("points").and_then(Value::as_i64))
            .collect();
        p.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
    };
    assert_eq!(
        moves(actual),
        moves(doc),
        "the balances do not move as the README shows:\n{actual:?}"
    );
}

/// Kills the server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl_present() {
    let ok = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "tests/readme_examples.rs runs the README's curl examples and needs curl on PATH: \
         install with `apt-get install curl` (Debian/Ubuntu), or run the tests through \
         ./test.sh, which installs it"
    );
}

/// Runs a README shell example against `base` (`http://127.0.0.1:PORT`);
/// returns its standard output.
fn run_example(cmd: &str, base: &str) -> String {
    let host = base.trim_start_matches("http://");
    let script = cmd.replace("localhost:8080", host);
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "the README example failed (exit {:?}):\n{script}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 answer")
}

/// Every key of the documented object is in the actual one.
fn has_documented_keys(doc: &Value, actual: &Value, what: &str) {
    let (Some(d), Some(a)) = (doc.as_object(), actual.as_object()) else {
        panic!("{what}: expected objects: {doc} / {actual}");
    };
    for k in d.keys() {
        assert!(
            a.contains_key(k),
            "{what}: the README shows `{k}`, the answer has no such field: {actual}"
        );
    }
}

#[test]
fn the_readme_checkout_examples_run_as_written() {
    curl_present();
    let md = readme();
    // No fixed dates in any example: they fail once the date has passed.
    for (info, body) in blocks(&md) {
        if info != "sh" {
            continue;
        }
        for fixed in [
            "\"departure\": \"2",
            "\"departure\":\"2",
            "--date 2",
            "\"date\": \"2",
        ] {
            assert!(
                !body.contains(fixed),
                "a README example has a fixed date ({fixed}…); compute it with `date`:\n{body}"
            );
        }
    }
    let examples = offer_examples(&md);
    assert!(
        examples.len() >= 2,
        "expected the README's checkout example and its bad-input example, found {}",
        examples.len()
    );
    let dir = tempfile::tempdir().unwrap();
    // The service as the README's first command starts it: every default
    // (100,000 synthetic members, the default catalog, model and experiments).
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_offer-engine"));
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("OFFER_ENGINE_MASTER_KEY");
    let (child, base) = support::spawn_server(cmd);
    let _server = Server(child);
    let (mut decisions, mut problems) = (0, 0);
    for (cmd, doc) in &examples {
        let text = run_example(cmd, &base);
        let actual: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("the answer is not JSON ({e}):\n{cmd}\n{text}"));
        if doc.get("status").is_some() {
            // A problem document: deterministic, so exactly as documented.
            assert_eq!(&actual, doc, "the README's documented answer to\n{cmd}");
            problems += 1;
            continue;
        }
        has_documented_keys(doc, &actual, "decision");
        for k in [
            "member_id",
            "cold_start",
            "model_version",
            "experiments",
            "fallback",
        ] {
            assert_eq!(
                actual[k], doc[k],
                "`{k}` differs from the README:\n{actual}"
            );
        }
        let offers = actual["offers"].as_array().expect("offers");
        assert!(!offers.is_empty(), "no offers: {actual}");
        for o in doc["offers"].as_array().expect("documented offers") {
            has_documented_keys(o, &offers[0], "offer");
        }
        decisions += 1;
    }
    assert!(
        decisions >= 1 && problems >= 1,
        "{decisions} decisions, {problems} problems"
    );
    let flows = flow_examples(&md);
    assert!(
        !flows.is_empty(),
        "the README's points accept-and-refund example"
    );
    for (cmd, doc) in &flows {
        let actual = json_values(&run_example(cmd, &base));
        check_flow(cmd, &actual, &json_values(doc));
    }
}

#[test]
fn the_readme_commands_exist() {
    let md = readme();
    let b = blocks(&md);
    let sh: Vec<&str> = b
        .iter()
        .filter(|(i, _)| i == "sh")
        .map(|(_, body)| body.trim())
        .collect();
    assert!(
        sh.contains(&"cargo run --release -- serve"),
        "serve command"
    );
    assert!(sh.contains(&"./test.sh"), "test command");
    let test_sh = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test.sh");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&test_sh)
            .expect("test.sh exists")
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "test.sh is executable");
    }
    let script = std::fs::read_to_string(&test_sh).unwrap();
    assert!(script.contains("cargo test --all-targets --locked"));
    // .ci/run runs the same command.
    let ci =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/run")).unwrap();
    assert!(ci.contains("./test.sh"));
    // Paths the README names exist.
    for p in [
        "tests/fixtures/assignment/vectors.json",
        "docs/performance.md",
        "CHANGELOG.md",
    ] {
        assert!(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p).exists(),
            "{p} is named in the README and does not exist"
        );
        assert!(md.contains(p), "README names {p}");
    }
}

#[test]
fn serve_help_says_what_a_newcomer_needs() {
    let out = Command::new(env!("CARGO_BIN_EXE_offer-engine"))
        .args(["serve", "--help"])
        .env_remove("OFFER_ENGINE_MASTER_KEY")
        .output()
        .unwrap();
    assert!(out.status.success());
    // Compared with whitespace runs as one space (clap may wrap lines).
    let help = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "[env: OFFER_ENGINE__SERVER__ADDR",
        "[env: OFFER_ENGINE_MASTER_KEY]",
        "[default: 127.0.0.1:8080]",
        "[default: ./data]",
        "needs a master key",
        "README.md",
    ] {
        assert!(
            help.contains(needle),
            "`serve --help` lacks {needle:?}:\n{help}"
        );
    }
}
