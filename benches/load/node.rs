//! The server under test, as a child process on an ephemeral port: a
//! pushgrid node, or the baseline (this same bench binary in server mode),
//! both started by the starter the tests use (`tests/common/node.rs`). Its
//! resident memory and CPU time are read from `/proc`.

use std::process::Command;

#[path = "../../tests/common/node.rs"]
mod starter;

use starter::{Launch, NodeProcess};

pub struct ServerProcess {
    process: NodeProcess,
    /// `HOST:PORT`.
    pub addr: String,
    pub name: &'static str,
}

impl ServerProcess {
    pub fn pushgrid(config_toml: &str) -> ServerProcess {
        let process = Launch::new().config(config_toml).log_level("warn").start();
        ServerProcess::named("pushgrid", process)
    }

    /// A member of a cluster on its own loopback address `ip`: named
    /// `name`, its link on `link`, joining through `join` (none: founding).
    pub fn member(
        ip: &str,
        name: &str,
        link: &str,
        join: Option<&str>,
        failure_timeout_ms: u64,
    ) -> ServerProcess {
        let timeout = failure_timeout_ms.to_string();
        let mut args = vec![
            "--cluster-bind",
            link,
            "--node-id",
            name,
            "--failure-timeout-ms",
            timeout.as_str(),
        ];
        if let Some(join) = join {
            args.extend(["--join", join]);
        }
        let process = Launch::new()
            .on(ip)
            .args(&args)
            .log_level("warn,openraft=error,chitchat=error")
            .start();
        ServerProcess::named("pushgrid", process)
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGKILL) };
    }

    pub fn baseline() -> ServerProcess {
        let mut command = Command::new(std::env::current_exe().expect("the bench binary"));
        command.env(super::baseline::SERVER_MODE_ENV, "1");
        ServerProcess::named("baseline", NodeProcess::spawn(command))
    }

    fn named(name: &'static str, process: NodeProcess) -> ServerProcess {
        ServerProcess {
            addr: process.addr().to_string(),
            process,
            name,
        }
    }

    pub fn ws_url(&self) -> String {
        self.process.ws_url()
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Resident memory, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
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
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
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
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
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
