//! Starting the real `offer-engine` binary for tests that need a process of
//! its own (kill -9, an external API fuzzer): port 0, the port read back from
//! the server's "listening" log line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Spawns `cmd` (the binary with its `serve` arguments and environment),
/// waits until it logs the port it listens on, and returns the child and its
/// base URL. Server warnings and errors are echoed to the test's stderr.
pub fn spawn_server(mut cmd: Command) -> (Child, String) {
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && line.contains("listening") {
                if let Some(p) = line.split("port=").nth(1) {
                    let port: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
                    let _ = tx.send(port);
                    sent = true;
                }
            }
            // `Error:` is how the binary reports the error it exits with.
            if line.contains("WARN") || line.contains("ERROR") || line.starts_with("Error") {
                eprintln!("server: {line}");
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server reports its port");
    (child, format!("http://127.0.0.1:{port}"))
}
