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
    if let Some(command) = cli.command {
        return pushgrid::client::run(command);
    }
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pushgrid: {err}");
            return ExitCode::from(2);
        }
    };
    pushgrid::logging::init(&config.log_level, cli.log_level.is_some());

    let served = actix_web::rt::System::new().block_on(async move {
        let node = pushgrid::node::start(config).await?;
        // Listening before the address is printed: whoever starts the node
        // may stop it as soon as it reads the address.
        let signals = ShutdownSignals::install();
        println!(
            "pushgrid listening on http://{}/ (open it in a browser for the live scoreboard)",
            node.address
        );
        let _ = std::io::stdout().flush();
        let shutdown = node.shutdown_handle();
        let mut server = node.server;
        tokio::select! {
            served = &mut server => return served.map_err(|e| format!("server failed: {e}")),
            signal = signals.next() => log::info!("{signal} received"),
        }
        // The server future runs the stop it is asked for: poll both.
        let ((), served) = tokio::join!(shutdown.shut_down(), server);
        served.map_err(|e| format!("server failed: {e}"))
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pushgrid: {err}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from `install` on.
struct ShutdownSignals {
    terminate: Option<actix_web::rt::signal::unix::Signal>,
    interrupt: Option<actix_web::rt::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> Self {
        use actix_web::rt::signal::unix::{signal, SignalKind};
        let (terminate, interrupt) = (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        );
        if terminate.is_none() || interrupt.is_none() {
            log::warn!(
                "cannot listen for SIGTERM/SIGINT; they will stop the node without a graceful shutdown"
            );
        }
        ShutdownSignals { terminate, interrupt }
    }

    /// Resolves on the first of them; names it.
    async fn next(mut self) -> &'static str {
        let terminate = async {
            match self.terminate.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        let interrupt = async {
            match self.interrupt.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = terminate => "SIGTERM",
            _ = interrupt => "SIGINT",
        }
    }
}
