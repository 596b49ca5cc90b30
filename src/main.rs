//! The `pushgrid` binary: parse the flags, load the config, start a node and
//! serve until stopped. Every start-up failure is one line on stderr and a
//! non-zero exit, never a panic.

use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use pushgrid::config::{Cli, Config};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("pushgrid: {} (see --help)", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pushgrid: {err}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log_level, cli.log_level.is_some());

    let served = actix_web::rt::System::new().block_on(async move {
        let node = pushgrid::node::start(config).await?;
        raise_file_limit();
        println!(
            "pushgrid listening on http://{}/ (open it in a browser for the live scoreboard)",
            node.address
        );
        let _ = std::io::stdout().flush();
        node.server.await.map_err(|e| format!("server failed: {e}"))
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pushgrid: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Every connection is a file descriptor: lift the soft limit to the hard
/// one where the system allows, and say what it is.
fn raise_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::info!("file descriptor limit: {limit} (bounds concurrent connections)"),
        Err(err) => log::warn!("could not raise the file descriptor limit: {err}"),
    }
}

/// `--log-level` wins over `RUST_LOG`, which wins over the config file.
fn init_logging(level: &str, from_flag: bool) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    if from_flag {
        builder.parse_filters(level);
    }
    builder.init();
}
