//! `redshard-admin`: the operator's CLI for redshard.
//!
//! It talks RESP to the proxy's admin port: by default its owner-only Unix socket
//! (`admin_socket`, `/tmp/redshard-<uid>/admin.sock`, or `-s PATH` / `REDSHARD_ADMIN_SOCKET`),
//! which needs no password; with redis-cli's flags `-h HOST -p PORT -a PASSWORD` its TCP
//! port (`admin_listen` with `admin_password`). It offers the verbs of
//! `redis-cli --cluster` where they mean the same: `info`, `check`, `add-node`, `del-node`,
//! `reshard`, `rebalance`, plus `failover`, `migrations`, `cancel` and `commands` (the admin
//! port's own command list). Wherever a master id is
//! asked, a shard may be named by its name or its master's address. Offline helpers:
//! `keyslot` and `check-config`.
//!
//! - `client`: the blocking RESP client.
//! - `model`: the admin port's replies as types.
//! - `cluster`: info, check, add-node, del-node, failover, migrations, cancel, commands.
//! - `moves`: reshard and rebalance, with confirmation and a progress bar.
//! - `offline`: keyslot and check-config.
//! - `output`: printing that survives a closed stdout.
//!
//! Exit status: 0 on success; 1 when the proxy refused, could not be reached, `check` found a
//! problem, or a move failed.

/// `println!` that ends the program quietly when stdout is closed (`redshard-admin check |
/// head`), instead of panicking on the broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

mod client;
mod cluster;
mod model;
mod moves;
mod offline;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};

use client::AdminClient;

/// The redshard operator's CLI: `redis-cli --cluster`'s verbs against the proxy's admin port.
#[derive(Debug, Parser)]
#[command(name = "redshard-admin", version, about, disable_help_flag = true)]
struct Cli {
    /// The proxy's admin socket (`admin_socket`, like redis-cli -s); default: the
    /// REDSHARD_ADMIN_SOCKET environment variable, else /tmp/redshard-<uid>/admin.sock, where
    /// a proxy run by the same user listens by default.
    #[arg(short = 's', long = "socket", global = true, conflicts_with_all = ["host", "port"])]
    socket: Option<PathBuf>,
    /// The proxy's admin host on TCP (`admin_listen`, like redis-cli -h); with -h or -p the
    /// CLI connects over TCP instead of the socket.
    #[arg(short = 'h', long = "host", global = true)]
    host: Option<String>,
    /// The proxy's admin port on TCP (`admin_listen`); default 6390 when -h is given.
    #[arg(short = 'p', long = "port", global = true)]
    port: Option<u16>,
    /// The admin password for TCP (`admin_password`); the REDISCLI_AUTH environment variable is
    /// used when this is not given, as by redis-cli.
    #[arg(short = 'a', long = "pass", global = true)]
    password: Option<String>,
    /// Print help.
    #[arg(long, action = ArgAction::Help, global = true)]
    help: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Shards with their master, keys, slots and replicas, like `redis-cli --cluster info`.
    Info,
    /// The admin port's own commands, with their arguments (what `redis-cli -s SOCKET
    /// COMMANDS` shows; redis-cli answers HELP itself).
    Commands,
    /// Check the cluster: every slot served, masters up, replicas in sync, no failed
    /// migration. Exits 1 naming each problem.
    Check,
    /// Add a node: the master of a new shard (with no slots), or with --cluster-slave a
    /// replica of a shard, then wait until it is in sync.
    AddNode {
        /// The new node, host:port.
        new_addr: String,
        /// Add it as a replica.
        #[arg(long = "cluster-slave", alias = "cluster-replica")]
        cluster_slave: bool,
        /// The shard it replicates (name or master address); default: the one with the
        /// fewest replicas.
        #[arg(long = "cluster-master-id", requires = "cluster_slave")]
        cluster_master_id: Option<String>,
        /// The new shard's name; default: the smallest free sN.
        #[arg(long, conflicts_with = "cluster_slave")]
        name: Option<String>,
        /// How long to wait for a new replica to be in sync, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Remove a node: a replica, or the master of a shard that has no replicas and no slots.
    DelNode {
        /// The node, host:port.
        addr: String,
    },
    /// Move N slots (the source's highest-numbered ones) from one shard to another.
    Reshard {
        /// The source shard (name or master address).
        #[arg(long = "cluster-from")]
        cluster_from: String,
        /// The target shard (name or master address).
        #[arg(long = "cluster-to")]
        cluster_to: String,
        /// How many slots.
        #[arg(long = "cluster-slots")]
        cluster_slots: usize,
        /// Do not ask for confirmation.
        #[arg(long = "cluster-yes")]
        cluster_yes: bool,
    },
    /// Give every shard an equal share of the slots.
    Rebalance {
        /// Give shards that own no slots a share too.
        #[arg(long = "cluster-use-empty-masters")]
        cluster_use_empty_masters: bool,
        /// Move nothing when every shard is within this many percent of its share (default 2).
        #[arg(long = "cluster-threshold")]
        cluster_threshold: Option<f64>,
        /// Show the plan only.
        #[arg(long = "cluster-simulate")]
        cluster_simulate: bool,
        /// Do not ask for confirmation.
        #[arg(long = "cluster-yes")]
        cluster_yes: bool,
    },
    /// Graceful failover of a shard to an in-sync replica (no client sees an error).
    Failover {
        /// The shard (name or master address).
        shard: String,
        /// The replica to promote; default: the first in-sync one that answers.
        #[arg(long)]
        to: Option<String>,
    },
    /// Queued, running and recent migrations with their progress.
    Migrations,
    /// Cancel the running and queued migrations (unfinished slots go back to their source).
    Cancel,
    /// Print the hash slot of each KEY (like CLUSTER KEYSLOT), and its shard when --config is given.
    Keyslot {
        /// A configuration file whose shards to name.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Validate a configuration file and print its slot map.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let password = cli
        .password
        .clone()
        .or_else(|| std::env::var("REDISCLI_AUTH").ok());
    let connect = || {
        if cli.host.is_some() || cli.port.is_some() {
            return AdminClient::connect(
                cli.host.as_deref().unwrap_or("127.0.0.1"),
                cli.port
                    .unwrap_or(redshard_config::ha::CONVENTIONAL_ADMIN_PORT),
                password.as_deref(),
            );
        }
        match cli
            .socket
            .clone()
            .or_else(|| std::env::var_os("REDSHARD_ADMIN_SOCKET").map(PathBuf::from))
        {
            Some(path) => AdminClient::connect_unix(&path, false),
            None => AdminClient::connect_unix(&redshard_config::ha::default_admin_socket(), true),
        }
    };
    let result: anyhow::Result<bool> = match cli.command {
        Command::Keyslot { config, keys } => offline::keyslot(config.as_deref(), &keys),
        Command::CheckConfig { file } => offline::check_config(&file),
        Command::Info => connect().and_then(|mut c| cluster::info(&mut c).map(|()| true)),
        Command::Commands => connect().and_then(|mut c| cluster::commands(&mut c).map(|()| true)),
        Command::Check => connect().and_then(|mut c| cluster::check(&mut c)),
        Command::AddNode {
            new_addr,
            cluster_slave,
            cluster_master_id,
            name,
            timeout,
        } => connect().and_then(|mut c| {
            let replica_of = cluster_slave.then_some(cluster_master_id.as_deref());
            cluster::add_node(
                &mut c,
                &new_addr,
                replica_of,
                name.as_deref(),
                Duration::from_secs(timeout),
            )
            .map(|()| true)
        }),
        Command::DelNode { addr } => {
            connect().and_then(|mut c| cluster::del_node(&mut c, &addr).map(|()| true))
        }
        Command::Reshard {
            cluster_from,
            cluster_to,
            cluster_slots,
            cluster_yes,
        } => connect().and_then(|mut c| {
            moves::reshard(
                &mut c,
                &cluster_from,
                &cluster_to,
                cluster_slots,
                cluster_yes,
            )
        }),
        Command::Rebalance {
            cluster_use_empty_masters,
            cluster_threshold,
            cluster_simulate,
            cluster_yes,
        } => connect().and_then(|mut c| {
            moves::rebalance(
                &mut c,
                cluster_use_empty_masters,
                cluster_threshold,
                cluster_simulate,
                cluster_yes,
            )
        }),
        Command::Failover { shard, to } => connect()
            .and_then(|mut c| cluster::failover(&mut c, &shard, to.as_deref()).map(|()| true)),
        Command::Migrations => {
            connect().and_then(|mut c| cluster::migrations(&mut c).map(|()| true))
        }
        Command::Cancel => connect().and_then(|mut c| cluster::cancel(&mut c).map(|()| true)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("[ERR] {e:#}");
            ExitCode::FAILURE
        }
    }
}
