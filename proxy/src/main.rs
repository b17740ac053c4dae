//! The `redshard` binary: load and validate the configuration, restore the persisted topology,
//! serve clients until SIGTERM or SIGINT, then drain within the grace period.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use redshard_config::{Config, LogFormat};
use tracing::{error, info, warn};

/// A sharding proxy for the Redis protocol in front of plain Redis nodes.
#[derive(Debug, Parser)]
#[command(name = "redshard", version, about)]
struct Cli {
    /// The configuration file (TOML).
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        required_unless_present = "check_config"
    )]
    config: Option<PathBuf>,
    /// Validate FILE and exit: 0 when valid, 1 with the reason otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Log format; overrides `[log] format` from the file.
    #[arg(long, value_enum)]
    log_format: Option<CliLogFormat>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.check_config {
        return match Config::load(path) {
            Ok(config) => {
                let nodes: usize = config.shards.iter().map(|s| 1 + s.replicas.len()).sum();
                println!(
                    "{}: OK ({} shards, {} nodes, all 16384 slots assigned)",
                    path.display(),
                    config.shards.len(),
                    nodes
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(path) = &cli.config else {
        eprintln!("redshard: --config FILE is required");
        return ExitCode::FAILURE;
    };
    let mut config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(format) = cli.log_format {
        config.log.format = match format {
            CliLogFormat::Text => LogFormat::Text,
            CliLogFormat::Json => LogFormat::Json,
        };
    }
    init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(config));
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config) -> ExitCode {
    let grace = config.shutdown_grace;
    // Handlers first: a SIGTERM that arrives as soon as clients can connect must drain too.
    let signals = Signals::install();
    let proxy = match redshard_proxy::Proxy::start(config).await {
        Ok(proxy) => proxy,
        Err(e) => {
            error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    info!(listen = %proxy.local_addr(), epoch = proxy.epoch(), "redshard is serving");
    signals.wait().await;
    info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: draining clients"
    );
    if proxy.shutdown(grace).await {
        info!("drained gracefully");
    } else {
        warn!("grace period elapsed with clients still connected; closing them");
    }
    ExitCode::SUCCESS
}

/// SIGTERM and SIGINT, both of which start a graceful drain.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot install signal handlers; stop redshard with SIGKILL");
                None
            }
        };
        Self { streams }
    }

    #[cfg(unix)]
    async fn wait(self) {
        let Some((mut term, mut int)) = self.streams else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    }

    #[cfg(not(unix))]
    fn install() -> Self {
        Self {}
    }

    #[cfg(not(unix))]
    async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
        info!("Ctrl-C received");
    }
}
