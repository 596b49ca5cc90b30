//! The command line: `--help`, and start-up failures that are one clear line
//! and a non-zero exit, never a panic.

use std::io::Write;
use std::process::{Command, Output};

fn pushgrid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pushgrid"))
        .args(args)
        .output()
        .expect("run pushgrid")
}

fn one_line_error(output: &Output) -> String {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line, got {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn help_lists_every_option() {
    let output = pushgrid(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for option in [
        "--bind",
        "--config",
        "--no-demo",
        "--log-level",
        "--http-workers",
        "--max-connections",
        "--ops-per-second",
        "--auth-file",
        "--node-id",
        "--max-caches",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
    for command in ["get", "put", "rm", "ls", "watch", "caches", "cluster"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "--help lacks the {command} command"
        );
    }
}

#[test]
fn an_unknown_flag_is_one_line_naming_it() {
    let stderr = one_line_error(&pushgrid(&["--bnid", "x"]));
    assert!(stderr.contains("--bnid"), "{stderr}");
}

#[test]
fn an_unreadable_config_file_is_one_line_naming_it() {
    let stderr = one_line_error(&pushgrid(&["--config", "/nonexistent/pushgrid.toml"]));
    assert!(stderr.contains("/nonexistent/pushgrid.toml"), "{stderr}");
}

#[test]
fn a_bad_config_field_is_one_line_naming_it() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"[caches.scores]\nsegments = 0\n").unwrap();
    let stderr = one_line_error(&pushgrid(&["--config", file.path().to_str().unwrap()]));
    assert!(stderr.contains("caches.scores.segments"), "{stderr}");

    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"bnid = \"x\"\n").unwrap();
    let stderr = one_line_error(&pushgrid(&["--config", file.path().to_str().unwrap()]));
    assert!(stderr.contains("bnid"), "{stderr}");
}

#[test]
fn an_address_in_use_is_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let stderr = one_line_error(&pushgrid(&["--bind", &addr, "--no-demo"]));
    assert!(stderr.contains(&addr), "{stderr}");
}

#[test]
fn a_log_level_that_is_no_level_is_one_line_naming_it() {
    let stderr = one_line_error(&pushgrid(&["--log-level", "verbose", "--no-demo"]));
    assert!(
        stderr.contains("log_level") && stderr.contains("verbose"),
        "{stderr}"
    );
    // Per-module filters, as RUST_LOG writes them, are fine: the node starts.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let stderr = one_line_error(&pushgrid(&[
        "--log-level",
        "info,pushgrid::push=debug",
        "--bind",
        &addr,
        "--no-demo",
    ]));
    assert!(
        stderr.contains(&addr),
        "got past the log filter to the bind: {stderr}"
    );
}

#[test]
fn a_negative_demo_rate_is_refused_for_its_value() {
    let stderr = one_line_error(&pushgrid(&["--demo-rate", "-5"]));
    assert!(stderr.contains("demo_rate") && stderr.contains("-5"), "{stderr}");
}

#[test]
fn limit_flags_are_validated() {
    let stderr = one_line_error(&pushgrid(&["--max-connections", "0", "--no-demo"]));
    assert!(stderr.contains("max_connections"), "{stderr}");
    let stderr = one_line_error(&pushgrid(&["--http-workers", "5000", "--no-demo"]));
    assert!(stderr.contains("http_workers"), "{stderr}");
    let stderr = one_line_error(&pushgrid(&["--auth-file", "/nonexistent/tokens.toml"]));
    assert!(stderr.contains("/nonexistent/tokens.toml"), "{stderr}");
}
