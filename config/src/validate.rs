//! Checks of the parsed file that serde cannot do, each error pointing at the offending line:
//! value bounds, node addresses, shard names, and the assignment of every slot exactly once.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::Range;

use toml::Spanned;

use crate::addr::NodeAddr;
use crate::config::ShardConfig;
use crate::error::ConfigError;
use crate::file::{ShardFile, MAX_METRICS_NAMESPACE_LEN, MAX_SHARD_NAME_LEN};
use crate::slot::{compact, Slot, SlotRange, SLOT_COUNT};

/// The text being validated and its name, to turn byte offsets into operator-facing lines.
pub(crate) struct Source<'a> {
    /// The whole file, to count lines.
    pub(crate) text: &'a str,
    /// The file's name in messages.
    pub(crate) origin: &'a str,
}

impl Source<'_> {
    /// 1-based line and column (in characters) of byte `offset`.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    /// A TOML syntax or type error, with its line and column.
    pub(crate) fn parse_error(&self, error: &toml::de::Error) -> ConfigError {
        // The toml error knows the key path but shows it only when rendered without input.
        let mut bare = error.clone();
        bare.set_input(None);
        let rendered = bare.to_string();
        let key = rendered
            .lines()
            .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
            .map_or(String::new(), |key| format!("{key}: "));
        let text = error.message().trim_end();
        let message = match error.span() {
            Some(span) => {
                let (line, column) = self.position(span.start);
                format!("line {line}, column {column}: {key}{text}")
            }
            None => format!("{key}{text}"),
        };
        ConfigError::Parse {
            origin: self.origin.to_owned(),
            message,
        }
    }

    /// An unacceptable value at `span`.
    pub(crate) fn invalid_at(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            line: span.map(|span| self.position(span.start).0),
            key: key.into(),
            message: message.into(),
        }
    }

    /// An unacceptable value `at`.
    pub(crate) fn invalid<T>(
        &self,
        at: Option<&Spanned<T>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.invalid_at(at.map(Spanned::span), key, message)
    }

    /// An optional password or user name: absent is fine, empty is a mistake.
    pub(crate) fn secret(
        &self,
        value: Option<Spanned<String>>,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        match value {
            Some(value) if value.get_ref().is_empty() => Err(self.invalid(
                Some(&value),
                key,
                "must not be empty; leave the key out to disable it",
            )),
            other => Ok(other.map(Spanned::into_inner)),
        }
    }

    /// A number with a default and bounds (`max: None` for no upper bound).
    pub(crate) fn bounded<T: PartialOrd + Copy + Display>(
        &self,
        value: Option<Spanned<T>>,
        key: &str,
        default: T,
        min: T,
        max: Option<T>,
    ) -> Result<T, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let n = *value.get_ref();
        let too_big = max.is_some_and(|max| n > max);
        if n < min || too_big {
            let message = match max {
                Some(max) => format!("must be between {min} and {max}, not {n}"),
                None => format!("must be at least {min}, not {n}"),
            };
            return Err(self.invalid(Some(&value), key, message));
        }
        Ok(n)
    }
}

/// Validates the `[[rule]]` tables: a prefix and a tag that are not empty, each prefix once
/// (two rules for one prefix would leave its keys' slot to the order of the file).
pub(crate) fn rules(
    files: Vec<Spanned<crate::rules::KeyRule>>,
    src: &Source<'_>,
) -> Result<Vec<crate::rules::KeyRule>, ConfigError> {
    let spans: Vec<_> = files.iter().map(Spanned::span).collect();
    let rules: Vec<_> = files.into_iter().map(Spanned::into_inner).collect();
    for (i, span) in spans.into_iter().enumerate() {
        if let Some(problem) = crate::rules::problem(&rules, i) {
            return Err(src.invalid_at(Some(span), format!("rule[{}]", i + 1), problem));
        }
    }
    Ok(rules)
}

/// Validates the `[[shard]]` tables: names, addresses (unique across the cluster, not one of
/// the proxy's own `listens`) and slots (each assigned exactly once).
pub(crate) fn shards(
    files: &[Spanned<ShardFile>],
    listens: &[Option<SocketAddr>],
    src: &Source<'_>,
) -> Result<Vec<ShardConfig>, ConfigError> {
    if files.is_empty() {
        return Err(src.invalid_at(
            None,
            "shard",
            "no [[shard]] is configured; the shards must together assign all 16384 slots",
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut nodes: HashMap<NodeAddr, (usize, &'static str)> = HashMap::new();
    let mut owner: Vec<Option<usize>> = vec![None; SLOT_COUNT];
    let mut shards = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let file = file.get_ref();
        let name = file.name.get_ref();
        let key = format!("shard[{i}].name");
        check_shard_name(name).map_err(|reason| src.invalid(Some(&file.name), &key, reason))?;
        if let Some(&j) = names.get(name.as_str()) {
            return Err(src.invalid(
                Some(&file.name),
                key,
                format!("{name:?} is already the name of shard[{j}]"),
            ));
        }
        names.insert(name, i);

        let mut node = |spanned: &Spanned<String>, key: String, role: &'static str| {
            let addr = NodeAddr::parse(spanned.get_ref())
                .map_err(|e| src.invalid(Some(spanned), &key, e.to_string()))?;
            if listens
                .iter()
                .flatten()
                .any(|&listen| is_listen_addr(&addr, listen))
            {
                return Err(src.invalid(
                    Some(spanned),
                    &key,
                    format!("{addr} is the proxy's own listen address; it would connect to itself"),
                ));
            }
            if let Some(&(j, other_role)) = nodes.get(&addr) {
                let other = files[j].get_ref().name.get_ref();
                return Err(src.invalid(
                    Some(spanned),
                    &key,
                    format!("node {addr} is already the {other_role} of shard {other:?}"),
                ));
            }
            nodes.insert(addr.clone(), (i, role));
            Ok(addr)
        };
        let master = node(&file.master, format!("shard[{i}].master"), "master")?;
        let replicas = file
            .replicas
            .iter()
            .enumerate()
            .map(|(j, r)| node(r, format!("shard[{i}].replicas[{j}]"), "replica"))
            .collect::<Result<Vec<_>, _>>()?;

        let key = format!("shard[{i}].slots");
        let mut slots = Vec::with_capacity(file.slots.len());
        for spanned in &file.slots {
            let range: SlotRange =
                spanned
                    .get_ref()
                    .parse()
                    .map_err(|e: crate::error::SlotRangeError| {
                        src.invalid(Some(spanned), &key, e.to_string())
                    })?;
            for slot in range.slots() {
                let entry = &mut owner[slot.index()];
                match *entry {
                    Some(j) if j == i => {
                        return Err(src.invalid(
                            Some(spanned),
                            &key,
                            format!("slot {slot} is assigned twice to {name:?}"),
                        ));
                    }
                    Some(j) => {
                        let other = files[j].get_ref().name.get_ref();
                        return Err(src.invalid(
                            Some(spanned),
                            &key,
                            format!("slot {slot} is assigned to both {other:?} and {name:?}"),
                        ));
                    }
                    None => *entry = Some(i),
                }
            }
            slots.push(range);
        }
        shards.push(ShardConfig {
            name: name.clone(),
            master,
            replicas,
            slots,
        });
    }
    let missing = (0..SLOT_COUNT)
        .filter(|&s| owner[s].is_none())
        .filter_map(|s| u16::try_from(s).ok().and_then(Slot::new));
    let missing = compact(missing);
    if !missing.is_empty() {
        return Err(src.invalid_at(None, "shard[*].slots", unassigned_message(&missing)));
    }
    Ok(shards)
}

/// `slots 5461-10922, 16000 are not assigned to any shard`, naming at most 5 ranges.
fn unassigned_message(missing: &[SlotRange]) -> String {
    const SHOWN: usize = 5;
    let single = missing.len() == 1 && missing[0].start == missing[0].end;
    let mut listed: Vec<String> = missing
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect();
    if missing.len() > SHOWN {
        listed.push(format!("and {} more ranges", missing.len() - SHOWN));
    }
    if single {
        format!("slot {} is not assigned to any shard", listed[0])
    } else {
        format!("slots {} are not assigned to any shard", listed.join(", "))
    }
}

/// Whether connecting to `addr` would reach the proxy's own listener.
fn is_listen_addr(addr: &NodeAddr, listen: SocketAddr) -> bool {
    let Some(ip) = addr.ip() else {
        return false;
    };
    if addr.port() != listen.port() {
        return false;
    }
    ip == listen.ip() || (listen.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified()))
}

/// Checks a shard name: 1-64 bytes of `A-Za-z0-9._-`, so it is safe in admin commands,
/// metric labels and file names.
pub(crate) fn check_shard_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > MAX_SHARD_NAME_LEN {
        return Err("must be at most 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("may hold only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Checks a metric namespace: 1-64 bytes of `A-Za-z0-9_`, not starting with a digit, so
/// every metric name built from it is a valid Prometheus name.
pub(crate) fn check_metrics_namespace(namespace: &str) -> Result<(), &'static str> {
    if namespace.is_empty() {
        return Err("must not be empty");
    }
    if namespace.len() > MAX_METRICS_NAMESPACE_LEN {
        return Err("must be at most 64 characters");
    }
    if namespace.as_bytes()[0].is_ascii_digit() {
        return Err("must not start with a digit");
    }
    if !namespace
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err("may hold only letters, digits and '_'");
    }
    Ok(())
}
