//! The `redshard` binary: load and validate the configuration, restore the persisted topology,
//! serve clients until SIGTERM or SIGINT (reloading the configuration on SIGHUP), then drain
//! within the grace period. `redshard healthcheck` asks a running proxy whether it is ready.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use redshard_config::{Config, LogFormat};
use redshard_proxy::metrics::healthcheck;
use redshard_proxy::{LogLevelHook, StateOptions};
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter};

/// A sharding proxy for the Redis protocol in front of plain Redis nodes.
#[derive(Debug, Parser)]
#[command(
    name = "redshard",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a running proxy whether it is ready: exit 0 when its /readyz answers 200, 1
    /// otherwise (for Docker's HEALTHCHECK).
    Healthcheck {
        /// The readiness URL (plain http).
        #[arg(long, default_value = healthcheck::DEFAULT_URL)]
        url: String,
        /// How long to wait for the answer, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { url, timeout_ms }) = &cli.command {
        return match healthcheck::healthcheck(url, Duration::from_millis(*timeout_ms)) {
            Ok(body) => {
                print!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(path) = &cli.check_config {
        return match Config::load(path) {
            Ok(config) => {
                // The certificate files too: a proxy that would not start is not valid.
                if let Err(e) = redshard_dataplane::tls::Tls::load(&config) {
                    eprintln!("{}: TLS: {e}", path.display());
                    return ExitCode::FAILURE;
                }
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
    let log_level = init_tracing(&config);
    if let Err(e) = redshard_dataplane::allocator::configure() {
        warn!(error = %e, "allocator settings not applied: freed memory returns to the OS later");
    }
    let options = StateOptions {
        config_path: Some(path.clone()),
        log_level: Some(log_level),
    };
    let threads = redshard_dataplane::state::worker_threads(config.threads);
    info!(threads, "starting worker threads");
    // One worker: the single-threaded scheduler (no work-stealing queues, no cross-thread
    // wake-ups); it runs every task on this thread.
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    // What a worker does when it runs out of work, beyond sleeping:
    // - with several workers, hand the objects it freed back to the allocator, so that the
    //   memory of clients that went idle returns to the OS whichever thread freed it (a
    //   single worker reuses its own cache with the next burst, and handing it back costs
    //   its pipelining clients memory: measured in `allocator`);
    // - with one, poll a while first when `busy_poll_us` asks for it (it needs the
    //   single-threaded scheduler, see `busy_poll`).
    let mut busy_poll = std::time::Duration::ZERO;
    if threads > 1 {
        builder.on_thread_park(redshard_dataplane::allocator::on_worker_park);
        if !config.busy_poll.is_zero() {
            warn!(
                threads,
                "busy_poll_us applies to one worker thread only: not applied"
            );
        }
    } else if !config.busy_poll.is_zero() {
        busy_poll = config.busy_poll;
        builder
            .on_thread_park(redshard_proxy::busy_poll::on_park)
            .on_thread_unpark(redshard_proxy::busy_poll::on_unpark);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    if !busy_poll.is_zero() {
        runtime.spawn(redshard_proxy::busy_poll::spinner(busy_poll));
    }
    let code = runtime.block_on(serve(config, options));
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

/// Starts logging, and returns the hook that changes the level on reload. `RUST_LOG`, when
/// set, wins over `[log] level`, at start and on reload.
fn init_tracing(config: &Config) -> LogLevelHook {
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_wins = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&config.log.level));
    let (filter, handle) = reload::Layer::new(filter);
    let json = config.log.format == LogFormat::Json;
    // Colours only for a person at a terminal: a pipe or a log file gets plain text, and
    // NO_COLOR (https://no-color.org) turns them off everywhere.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::registry()
        .with(filter)
        .with((!json).then(|| fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)))
        .with(json.then(|| fmt::layer().json().with_writer(std::io::stderr)))
        .init();
    LogLevelHook::new(move |level| {
        if env_wins {
            return Ok(false);
        }
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())?;
        Ok(true)
    })
}

async fn serve(config: Config, options: StateOptions) -> ExitCode {
    let grace = config.shutdown_grace;
    // Handlers first: a SIGTERM that arrives as soon as clients can connect must drain too.
    let mut signals = Signals::install();
    let proxy = match redshard_proxy::Proxy::start_with(config, options).await {
        Ok(proxy) => proxy,
        Err(e) => {
            error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let optional =
        |addr: Option<std::net::SocketAddr>| addr.map_or("off".into(), |a| a.to_string());
    info!(
        listen = %proxy.local_addr(),
        tls_listen = %optional(proxy.tls_addr()),
        metrics = %optional(proxy.metrics_addr()),
        epoch = proxy.epoch(),
        "redshard is serving"
    );
    while signals.next().await == Signal::Reload {
        // Logged (applied, refused, or needing a restart) by the reload itself.
        let _ = proxy.reload();
    }
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

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    /// SIGTERM or SIGINT: drain and exit.
    Stop,
    /// SIGHUP: reload the configuration file.
    Reload,
}

/// SIGTERM and SIGINT, both of which start a graceful drain, and SIGHUP, which reloads.
struct Signals {
    #[cfg(unix)]
    streams: Option<UnixSignals>,
}

#[cfg(unix)]
struct UnixSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Some(UnixSignals { term, int, hup }),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                warn!(error = %e, "cannot install signal handlers; stop redshard with SIGKILL");
                None
            }
        };
        Self { streams }
    }

    #[cfg(unix)]
    async fn next(&mut self) -> Signal {
        let Some(s) = &mut self.streams else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = s.term.recv() => { info!("SIGTERM received"); Signal::Stop }
            _ = s.int.recv() => { info!("SIGINT received"); Signal::Stop }
            _ = s.hup.recv() => { info!("SIGHUP received: reloading the configuration"); Signal::Reload }
        }
    }

    #[cfg(not(unix))]
    fn install() -> Self {
        Self {}
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        info!("Ctrl-C received");
        Signal::Stop
    }
}
