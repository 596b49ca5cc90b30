//! The one way tests and benches start servers: a real process of the
//! built binary (or any command that prints its URL first), on an ephemeral
//! port of the address it is given, so several nodes can run in one test,
//! each on its own loopback address. The process is killed when its
//! [`NodeProcess`] drops, so every test cleans up what it starts.
//!
//! Shared with `benches/load/node.rs` by path, so it uses only what both
//! tests and benches have.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a process may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start one pushgrid node.
#[derive(Clone, Debug)]
pub struct Launch {
    config_toml: String,
    args: Vec<String>,
    demo: bool,
    ip: String,
    /// 0: an ephemeral port.
    port: u16,
    log_level: Option<String>,
    fd_limit: Option<u64>,
}

impl Default for Launch {
    fn default() -> Self {
        Launch {
            config_toml: String::new(),
            args: Vec::new(),
            demo: false,
            ip: "127.0.0.1".into(),
            port: 0,
            log_level: None,
            fd_limit: None,
        }
    }
}

impl Launch {
    /// No config file, no demo feed, on 127.0.0.1.
    pub fn new() -> Self {
        Launch::default()
    }

    /// `toml` as the node's config file (none when empty).
    pub fn config(mut self, toml: &str) -> Self {
        self.config_toml = toml.to_string();
        self
    }

    /// Extra command-line flags.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Runs the demo feed, as `cargo run` does.
    pub fn demo(mut self) -> Self {
        self.demo = true;
        self
    }

    /// Listens on `ip` (any of 127.0.0.0/8) at an ephemeral port.
    pub fn on(mut self, ip: &str) -> Self {
        self.ip = ip.to_string();
        self
    }

    /// Listens on this port (a node restarted where clients expect it).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = Some(level.to_string());
        self
    }

    /// Runs the node with this file-descriptor limit (soft and hard).
    pub fn fd_limit(mut self, limit: u64) -> Self {
        self.fd_limit = Some(limit);
        self
    }

    /// Starts the node and waits for it to print its address.
    pub fn start(self) -> NodeProcess {
        let config = (!self.config_toml.is_empty()).then(|| {
            let mut file = tempfile::NamedTempFile::new().expect("temp file");
            file.write_all(self.config_toml.as_bytes()).expect("write config");
            file
        });
        let mut command = Command::new(env!("CARGO_BIN_EXE_pushgrid"));
        command
            .arg("--bind")
            .arg(format!("{}:{}", self.ip, self.port))
            .args(&self.args);
        if !self.demo {
            command.arg("--no-demo");
        }
        if let Some(level) = &self.log_level {
            command.args(["--log-level", level]);
        }
        if let Some(file) = &config {
            command.arg("--config").arg(file.path());
        }
        if let Some(limit) = self.fd_limit {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit is async-signal-safe, and the closure
            // touches nothing else between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut node = NodeProcess::spawn(command);
        node._config = config;
        node
    }
}

/// A running server process.
pub struct NodeProcess {
    child: Child,
    /// `http://HOST:PORT`, no trailing slash.
    pub base: String,
    _config: Option<tempfile::NamedTempFile>,
}

impl NodeProcess {
    /// A node with no config file and no demo feed.
    pub fn start() -> NodeProcess {
        Launch::new().start()
    }

    /// A node running the demo feed, as `cargo run` does, with extra flags.
    pub fn start_demo(args: &[&str]) -> NodeProcess {
        Launch::new().demo().args(args).start()
    }

    /// A node with `config_toml` as its config file (when not empty) and
    /// extra flags.
    pub fn start_with(config_toml: &str, args: &[&str]) -> NodeProcess {
        Launch::new().config(config_toml).args(args).start()
    }

    /// Runs `command`, which must print a line holding its `http://` URL
    /// first; its logs go to stderr when `PUSHGRID_TEST_LOG` is set.
    pub fn spawn(mut command: Command) -> NodeProcess {
        let show_logs = std::env::var_os("PUSHGRID_TEST_LOG").is_some();
        command.stdout(Stdio::piped()).stderr(if show_logs {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
        let mut child = command.spawn().expect("spawn the server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not print its address within {START_TIMEOUT:?}");
            }
        };
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"));
        NodeProcess {
            child,
            base: url.trim_end_matches('/').to_string(),
            _config: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `HOST:PORT`.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// `ws://HOST:PORT/ws`.
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
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
