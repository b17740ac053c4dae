//! `redshard-admin`: the operator's CLI for redshard.
//!
//! For now it answers offline questions (which slot a key lands in, whether a config file is
//! valid); the cluster verbs of `redis-cli --cluster` arrive with the admin port.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use redshard_config::{Config, Slot, Topology};

/// The redshard operator's CLI.
#[derive(Debug, Parser)]
#[command(name = "redshard-admin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    match Cli::parse().command {
        Command::Keyslot { config, keys } => {
            let topology = match config.as_deref().map(Config::load).transpose() {
                Ok(config) => config.map(|c| Topology::from_config(&c)),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            for key in keys {
                let slot = Slot::for_key(key.as_bytes());
                match &topology {
                    Some(t) => {
                        let shard = t.serving_shard(slot);
                        let name = t.shard(shard).map_or("?", |s| s.name.as_str());
                        println!("{key}\t{}\t{name}", slot.get());
                    }
                    None => println!("{key}\t{}", slot.get()),
                }
            }
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                let topology = Topology::from_config(&config);
                for shard in &topology.shards {
                    let slots: Vec<String> = topology
                        .slots_of(shard.id)
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    let replicas: Vec<String> =
                        shard.replicas.iter().map(|r| r.addr.to_string()).collect();
                    println!(
                        "{}\tmaster {}\treplicas [{}]\tslots {}",
                        shard.name,
                        shard.master,
                        replicas.join(", "),
                        slots.join(",")
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}
