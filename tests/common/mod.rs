//! Shared test support: start a real `pushgrid` process on an ephemeral port
//! and talk to it over real HTTP. The process is killed when the
//! [`TestNode`] drops, so every test cleans up what it starts.

#![allow(dead_code)]

pub mod sse;
pub mod ws;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use awc::http::header::HeaderMap;
use awc::http::StatusCode;
use serde_json::Value;

pub struct TestNode {
    child: Child,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    _config: Option<tempfile::NamedTempFile>,
}

impl TestNode {
    /// A node with no config file and no demo feed.
    pub fn start() -> TestNode {
        TestNode::start_with("", &[])
    }

    /// A node running the demo feed, as `cargo run` does.
    pub fn start_demo(args: &[&str]) -> TestNode {
        TestNode::launch("", args, false)
    }

    /// A node with `config_toml` as its config file (when not empty) and
    /// extra flags.
    pub fn start_with(config_toml: &str, args: &[&str]) -> TestNode {
        TestNode::launch(config_toml, args, true)
    }

    fn launch(config_toml: &str, args: &[&str], no_demo: bool) -> TestNode {
        let config = (!config_toml.is_empty()).then(|| {
            let mut file = tempfile::NamedTempFile::new().expect("temp file");
            file.write_all(config_toml.as_bytes()).expect("write config");
            file
        });
        let mut command = Command::new(env!("CARGO_BIN_EXE_pushgrid"));
        command.args(["--bind", "127.0.0.1:0"]).args(args);
        if no_demo {
            command.arg("--no-demo");
        }
        if let Some(file) = &config {
            command.arg("--config").arg(file.path());
        }
        let show_logs = std::env::var_os("PUSHGRID_TEST_LOG").is_some();
        command.stdout(Stdio::piped()).stderr(if show_logs {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
        let mut child = command.spawn().expect("spawn pushgrid");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("pushgrid did not print its address within 30 s");
            }
        };
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"));
        TestNode {
            child,
            base: url.trim_end_matches('/').to_string(),
            _config: config,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.base.replacen("http://", "ws://", 1))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as a service manager would.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM delivered");
    }

    /// Waits for the process to exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, read whole: status, headers, and the body as JSON (or
/// `Value::Null` when empty, `Value::String` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn etag(&self) -> Option<String> {
        self.headers
            .get("etag")
            .map(|v| v.to_str().expect("ASCII etag").to_string())
    }

    /// The contract's error code of an error body.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no error code>")
    }
}

pub fn client() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(30)).finish()
}

/// Sends a request built by `build` with `body` and reads the reply whole.
pub async fn send(request: awc::ClientRequest, body: impl Into<String>) -> Reply {
    let body: String = body.into();
    let mut response = if body.is_empty() {
        request.send().await
    } else {
        request.content_type("application/json").send_body(body).await
    }
    .expect("request failed");
    let bytes = response.body().limit(64 * 1024 * 1024).await.expect("read body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        body: if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
        },
        text,
    }
}

/// A small typed REST client for one node.
pub struct Rest<'a> {
    pub node: &'a TestNode,
    pub http: awc::Client,
}

impl<'a> Rest<'a> {
    pub fn new(node: &'a TestNode) -> Self {
        Rest { node, http: client() }
    }

    pub fn entry_url(&self, cache: &str, key: &str) -> String {
        self.node.url(&format!("/api/v1/caches/{cache}/entries/{key}"))
    }

    pub async fn create_cache(&self, cache: &str, config: &str) -> Reply {
        send(
            self.http.put(self.node.url(&format!("/api/v1/caches/{cache}"))),
            config,
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        send(self.http.get(self.node.url(path)), "").await
    }

    pub async fn get_entry(&self, cache: &str, key: &str) -> Reply {
        send(self.http.get(self.entry_url(cache, key)), "").await
    }

    pub async fn put_entry(&self, cache: &str, key: &str, value: &str) -> Reply {
        send(self.http.put(self.entry_url(cache, key)), value).await
    }

    pub async fn put_entry_if(&self, cache: &str, key: &str, value: &str, header: (&str, &str)) -> Reply {
        send(
            self.http.put(self.entry_url(cache, key)).insert_header(header),
            value,
        )
        .await
    }

    pub async fn delete_entry(&self, cache: &str, key: &str) -> Reply {
        send(self.http.delete(self.entry_url(cache, key)), "").await
    }

    /// The value of one sample of `/metrics`, e.g. `pushgrid_evictions_total{cache="c"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.get("/metrics").await.text;
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
    }
}
