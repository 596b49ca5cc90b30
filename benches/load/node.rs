//! The server under test, as a child process on an ephemeral port: a
//! pushgrid node, or the baseline (this same bench binary in server mode).
//! Its resident memory and CPU time are read from `/proc`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct ServerProcess {
    child: Child,
    pub addr: String,
    pub name: &'static str,
}

impl ServerProcess {
    pub fn pushgrid(config_toml: &str) -> ServerProcess {
        let path = std::env::temp_dir().join(format!("pushgrid-load-{}.toml", std::process::id()));
        std::fs::write(&path, config_toml).expect("write the node's config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_pushgrid"));
        command
            .args([
                "--bind",
                "127.0.0.1:0",
                "--no-demo",
                "--log-level",
                "warn",
                "--config",
            ])
            .arg(&path);
        ServerProcess::spawn("pushgrid", command)
    }

    pub fn baseline() -> ServerProcess {
        let mut command = Command::new(std::env::current_exe().expect("the bench binary"));
        command.env(super::baseline::SERVER_MODE_ENV, "1");
        ServerProcess::spawn("baseline", command)
    }

    fn spawn(name: &'static str, mut command: Command) -> ServerProcess {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server printed its address");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("a URL on the first line");
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        ServerProcess { child, addr, name }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Resident memory, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// CPU time so far, in seconds, to the nanosecond: the sum of every
    /// live thread's run time from `/proc/PID/task/*/schedstat` (the
    /// scheduler's own accounting; the server's threads live as long as
    /// it does). Falls back to [`ServerProcess::cpu_ticks_seconds`].
    pub fn cpu_seconds(&self) -> f64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return self.cpu_ticks_seconds();
        };
        let nanos: u64 = tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        if nanos == 0 {
            return self.cpu_ticks_seconds();
        }
        nanos as f64 / 1e9
    }

    /// User plus system CPU time so far, in seconds, in clock ticks.
    pub fn cpu_ticks_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        (ticks(11) + ticks(12)) as f64 / per_second
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
