//! Questions answered without a proxy: which slot a key lands in, whether a config file is
//! valid.

use std::path::Path;

use anyhow::Result;
use redshard_config::{Config, Slot, Topology};

/// `keyslot [--config FILE] KEY...`: each key's slot, and its shard with a config file.
///
/// # Errors
/// The configuration file is invalid.
pub fn keyslot(config: Option<&Path>, keys: &[String]) -> Result<bool> {
    let topology = config
        .map(Config::load)
        .transpose()?
        .map(|c| Topology::from_config(&c));
    for key in keys {
        match &topology {
            Some(t) => {
                let slot = t.slot_of(key.as_bytes());
                let shard = t.serving_shard(slot);
                let name = t.shard(shard).map_or("?", |s| s.name.as_str());
                match t.rules.rule_for(key.as_bytes()) {
                    Some(rule) => say!("{key}\t{}\t{name}\t{rule}", slot.get()),
                    None => say!("{key}\t{}\t{name}", slot.get()),
                }
            }
            None => say!("{key}\t{}", Slot::for_key(key.as_bytes()).get()),
        }
    }
    Ok(true)
}

/// `check-config FILE`: validates it and prints its slot map.
///
/// # Errors
/// The file is invalid; the error names the line and key.
pub fn check_config(file: &Path) -> Result<bool> {
    let config = Config::load(file)?;
    let topology = Topology::from_config(&config);
    for shard in &topology.shards {
        let slots: Vec<String> = topology
            .slots_of(shard.id)
            .iter()
            .map(ToString::to_string)
            .collect();
        let replicas: Vec<String> = shard.replicas.iter().map(|r| r.addr.to_string()).collect();
        say!(
            "{}\tmaster {}\treplicas [{}]\tslots {}",
            shard.name,
            shard.master,
            replicas.join(", "),
            slots.join(",")
        );
    }
    Ok(true)
}
