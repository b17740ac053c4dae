//! # redshard-metrics
//!
//! The leaf of the proxy's layers: every other crate of the proxy may call it, and it imports
//! nothing of the proxy (only the configuration's node addresses and the command table).
//!
//! - [`names`]: every metric's name, type and help text, in one place.
//! - The process-wide recorder ([`install`], [`Exporter`]) and the recording API the data
//!   path calls ([`command`], [`bytes_in`], [`backend_error`], ...).
//! - [`text`]: the Prometheus text format, for the metrics rendered here and for the scrape
//!   page.
//!
//! The scrape page (`/metrics`), the HTTP endpoint that serves it with the health checks, and
//! `redshard healthcheck` are at the top, in `redshard-proxy`: the page reads the whole proxy
//! state.
//!
//! # Two sources
//!
//! **Events** (commands, bytes, backend errors) are recorded by the functions of this crate
//! into one [`metrics-exporter-prometheus`](metrics_exporter_prometheus) recorder per
//! process, installed by [`install`] and also set as the global `metrics` recorder. Every
//! function is a no-op until then, and cheap after: static metric names and handles
//! registered once. The per-command metrics (counts, failures, total time and the latency
//! histogram) are the exception: recorded for every request, they are counters of this crate
//! (`CommandTable`), one set per thread that only that thread writes (no atomic
//! read-modify-write per request; a scrape adds the threads' up), found by the command's id
//! ([`command_spec`]) or the address of its name ([`command`]), and rendered by it next to
//! the recorder's text. The exporter's histogram keeps every sample until its upkeep
//! folds them into buckets (a lock-free list of blocks, pinned per sample); fixed buckets
//! cost one increment, hold no samples and need no upkeep.
//!
//! **State** (clients, topology, backend health, mirroring, failovers, migrations) is read
//! from the proxy at each scrape by the scrape page (`redshard_proxy::metrics::scrape`): always
//! exact for the proxy being scraped and never stale, with nothing to wire.
//!
//! # One recorder per process
//!
//! A process has one global recorder, and tests run many proxies in one process, so
//! [`install`] is idempotent: the first call builds the recorder, later calls return it. The
//! namespace (`metrics_namespace`) is therefore fixed by the first proxy started in the
//! process; a later proxy asking for another one is told so in the log and gets the first.
//! The event metrics of every proxy of the process add up; state metrics are per proxy.

pub mod names;
pub mod text;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics::{Counter, Gauge, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use redshard_config::NodeAddr;

use names::{Kind, Metric, LABEL_KIND, LABEL_NODE, LABEL_RESULT};
use text::Text;

/// The registration metadata of every metric (the Prometheus recorder ignores it).
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The process's recorder, once installed.
static REGISTRY: OnceLock<Registry> = OnceLock::new();
/// Serializes [`install`], so that exactly one recorder is ever built.
static INSTALL: Mutex<()> = Mutex::new(());

/// The installed recorder: renders the event metrics. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Exporter {
    /// The process-wide registry it renders.
    registry: &'static Registry,
}

/// Everything [`install`] sets up, for the life of the process.
#[derive(Debug)]
struct Registry {
    /// The namespace of every name, from the first [`install`].
    namespace: &'static str,
    /// The recorder; also the global one unless another was installed first.
    recorder: Arc<PrometheusRecorder>,
    /// Renders the recorder's metrics.
    handle: PrometheusHandle,
    /// `<ns>_backend_errors_total`, for per-call registration with a node label.
    backend_errors: &'static str,
    /// `<ns>_backend_connections`.
    backend_connections: &'static str,
    /// Per-command metrics.
    commands: CommandTable,
    /// `<ns>_net_input_bytes_total`.
    net_in: Counter,
    /// `<ns>_net_output_bytes_total`.
    net_out: Counter,
    /// `<ns>_protocol_errors_total`.
    protocol_errors: Counter,
    /// `<ns>_tls_handshake_errors_total`.
    tls_handshake_errors: Counter,
    /// `<ns>_config_reloads_total{result="ok"}`.
    reloads_ok: Counter,
    /// `<ns>_config_reloads_total{result="error"}`.
    reloads_error: Counter,
    /// `<ns>_write_acks_refused_total`.
    write_acks_refused: Counter,
}

/// Installs the process's recorder with `namespace`, or returns the one already installed
/// (whose namespace then wins; see the [module docs](self)).
pub fn install(namespace: &str) -> Exporter {
    let _guard = INSTALL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(registry) = REGISTRY.get() {
        if registry.namespace != namespace {
            tracing::warn!(
                installed = registry.namespace,
                requested = namespace,
                "metrics are already installed in this process with another namespace; keeping it"
            );
        }
        return Exporter { registry };
    }
    let recorder = PrometheusBuilder::new().build_recorder();
    // Under INSTALL and checked empty above: this closure runs.
    let registry = REGISTRY.get_or_init(|| Registry::build(namespace, recorder));
    Exporter { registry }
}

/// `<namespace>_<name>`, allocated once per process and kept for its life, so that metric
/// keys can borrow it without allocating.
fn leak_name(namespace: &str, metric: &Metric) -> &'static str {
    Box::leak(format!("{namespace}_{}", metric.name).into_boxed_str())
}

impl Registry {
    fn build(namespace: &str, recorder: PrometheusRecorder) -> Self {
        let recorder = Arc::new(recorder);
        let handle = recorder.handle();
        for metric in names::EVENTS {
            let name = KeyName::from(leak_name(namespace, metric));
            let help = metric.help.into();
            match metric.kind {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Gauge => recorder.describe_gauge(name, None, help),
                Kind::Histogram => recorder.describe_histogram(name, None, help),
            }
        }
        if metrics::set_global_recorder(Arc::clone(&recorder)).is_err() {
            tracing::warn!(
                "another metrics recorder is already installed: redshard's own metrics are still \
                 served, metrics of other libraries are not"
            );
        }
        let counter = |metric: &Metric, labels: Vec<Label>| {
            let key = Key::from_parts(leak_name(namespace, metric), labels);
            recorder.register_counter(&key, &METADATA)
        };
        let reloads = |result: &'static str| {
            counter(
                &names::CONFIG_RELOADS_TOTAL,
                vec![Label::new(LABEL_RESULT, result)],
            )
        };
        let registry = Self {
            namespace: Box::leak(namespace.to_owned().into_boxed_str()),
            backend_errors: leak_name(namespace, &names::BACKEND_ERRORS_TOTAL),
            backend_connections: leak_name(namespace, &names::BACKEND_CONNECTIONS),
            commands: CommandTable::new(),
            net_in: counter(&names::NET_INPUT_BYTES_TOTAL, Vec::new()),
            net_out: counter(&names::NET_OUTPUT_BYTES_TOTAL, Vec::new()),
            protocol_errors: counter(&names::PROTOCOL_ERRORS_TOTAL, Vec::new()),
            tls_handshake_errors: counter(&names::TLS_HANDSHAKE_ERRORS_TOTAL, Vec::new()),
            reloads_ok: reloads("ok"),
            reloads_error: reloads("error"),
            write_acks_refused: counter(&names::WRITE_ACKS_REFUSED_TOTAL, Vec::new()),
            handle,
            recorder,
        };
        registry
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
    }
}

impl Exporter {
    /// The namespace every name starts with.
    #[must_use]
    pub fn namespace(&self) -> &'static str {
        self.registry.namespace
    }

    /// Appends the event metrics, in the Prometheus text format, to `out`.
    pub fn render_into(&self, out: &mut String) {
        out.push_str(&self.registry.handle.render());
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        self.registry.commands.render(self.namespace(), out);
    }
}

/// The installed registry, if any.
fn registry() -> Option<&'static Registry> {
    REGISTRY.get()
}

/// The process's recorder, when [`install`] has run; the scrape page renders its metrics.
#[must_use]
pub fn installed() -> Option<Exporter> {
    registry().map(|registry| Exporter { registry })
}

// ---- The recording API ---------------------------------------------------------------------

/// Records one command served: `cmd` is its name in the command table (`CommandSpec::name`,
/// such as `get` or `config|get`), `elapsed` the time from its arrival to its reply being
/// ready, `failed` whether that reply is an error. Counts `commands_total`,
/// `commands_failed_calls_total`, `commands_duration_seconds_total` and the
/// `command_duration_seconds` histogram.
pub fn command(cmd: &'static str, elapsed: Duration, failed: bool) {
    let Some(registry) = registry() else {
        return;
    };
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    registry.commands.record(cmd, nanos, failed);
}

/// [`command`] for a command of the command table, found by its [`CommandSpec::id`]: an
/// index into an array where [`command`] hashes the name's address. The data path's call,
/// once per request.
///
/// [`CommandSpec::id`]: redshard_protocol::command::CommandSpec::id
pub fn command_spec(
    spec: &'static redshard_protocol::command::CommandSpec,
    elapsed: Duration,
    failed: bool,
) {
    let Some(registry) = registry() else {
        return;
    };
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    registry.commands.record_spec(spec, nanos, failed);
}

/// Records `n` bytes read from a client (`net_input_bytes_total`).
pub fn bytes_in(n: u64) {
    if let Some(registry) = registry() {
        registry.net_in.increment(n);
    }
}

/// Records `n` bytes written to a client (`net_output_bytes_total`).
pub fn bytes_out(n: u64) {
    if let Some(registry) = registry() {
        registry.net_out.increment(n);
    }
}

/// Records a client request that was not valid RESP (`protocol_errors_total`).
pub fn protocol_error() {
    if let Some(registry) = registry() {
        registry.protocol_errors.increment(1);
    }
}

/// Records a client TLS handshake that failed or timed out (`tls_handshake_errors_total`).
pub fn tls_handshake_error() {
    if let Some(registry) = registry() {
        registry.tls_handshake_errors.increment(1);
    }
}

/// Records a failure of a connection to `node` (`backend_errors_total`); `kind` is one of
/// [`names::error_kind`]. Meant for connection-level events (a failed connect, a timeout, a
/// close), not for each request they fail.
pub fn backend_error(node: &NodeAddr, kind: &'static str) {
    if let Some(registry) = registry() {
        let labels = vec![
            Label::new(LABEL_NODE, node.as_str().to_owned()),
            Label::new(LABEL_KIND, kind),
        ];
        registry
            .counter(registry.backend_errors, labels)
            .increment(1);
    }
}

/// Records that a connection (lane) to `node` opened (`backend_connections`).
pub fn backend_connected(node: &NodeAddr) {
    if let Some(registry) = registry() {
        let labels = vec![Label::new(LABEL_NODE, node.as_str().to_owned())];
        registry
            .gauge(registry.backend_connections, labels)
            .increment(1.0);
    }
}

/// Records that a connection (lane) to `node` closed (`backend_connections`).
pub fn backend_disconnected(node: &NodeAddr) {
    if let Some(registry) = registry() {
        let labels = vec![Label::new(LABEL_NODE, node.as_str().to_owned())];
        registry
            .gauge(registry.backend_connections, labels)
            .decrement(1.0);
    }
}

/// Records a configuration reload and whether it was applied (`config_reloads_total`).
pub fn config_reload(ok: bool) {
    if let Some(registry) = registry() {
        if ok {
            registry.reloads_ok.increment(1);
        } else {
            registry.reloads_error.increment(1);
        }
    }
}

/// Records `n` writes answered `-NOREPLICAS` because their acknowledgement by the replicas
/// could not be verified (`write_acks_refused_total`).
pub fn write_acks_refused(n: u64) {
    if let Some(registry) = registry() {
        registry.write_acks_refused.increment(n);
    }
}

// ---- Per-command metrics ---------------------------------------------------------------------

/// Buckets of the latency histogram: one per bound of [`names::COMMAND_DURATION_BUCKETS`],
/// and the last for everything above.
const BUCKETS: usize = names::COMMAND_DURATION_BUCKETS.len() + 1;

/// The metrics of one command, created on its first use.
#[derive(Debug)]
struct CommandMetrics {
    /// `commands_failed_calls_total{cmd}`.
    failed: AtomicU64,
    /// `commands_duration_seconds_total{cmd}` and the histogram's `_sum`, in nanoseconds
    /// (rendered in seconds).
    nanos: AtomicU64,
    /// `command_duration_seconds{cmd}`: how many calls fell in each bucket (not cumulative;
    /// rendering adds them up). Their sum is `commands_total{cmd}`: one add per call, not two.
    buckets: [AtomicU64; BUCKETS],
}

impl CommandMetrics {
    fn new() -> Self {
        Self {
            failed: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// One call that took `nanos`, by the only thread that writes these counters (a thread's
    /// own, see [`ThreadCounters`]): plain loads and stores, no read-modify-write.
    fn record_alone(&self, nanos: u64, failed: bool) {
        let add = |counter: &AtomicU64, n: u64| {
            counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        };
        if failed {
            add(&self.failed, 1);
        }
        add(&self.nanos, nanos);
        add(&self.buckets[bucket_of(nanos)], 1);
    }

    /// Adds these counts to `sum`.
    fn add_to(&self, sum: &mut Counts) {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        sum.failed += load(&self.failed);
        sum.nanos += load(&self.nanos);
        for (total, bucket) in sum.buckets.iter_mut().zip(&self.buckets) {
            *total += load(bucket);
        }
    }

    /// One call that took `nanos`, by any thread.
    fn record(&self, nanos: u64, failed: bool) {
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
    }
}

/// The histogram bucket of a call that took `nanos`: `le` bounds, so a call of exactly a
/// bound's duration counts in that bucket.
fn bucket_of(nanos: u64) -> usize {
    BUCKET_NANOS.partition_point(|&bound| bound < nanos)
}

/// One command's counts summed over the threads, for a scrape.
#[derive(Debug)]
struct Counts {
    failed: u64,
    nanos: u64,
    buckets: [u64; BUCKETS],
}

/// One thread's metrics of the command table's commands, created when it first records one:
/// only that thread writes them, so a call costs no atomic read-modify-write (three per
/// request otherwise, on counters every worker thread shares); a scrape adds every thread's
/// up. When the thread ends they go to the next thread that records, counts included.
#[derive(Debug)]
struct ThreadCounters {
    /// The metrics of `names[i]` (see [`CommandTable`]) recorded by this thread, once used.
    slots: Box<[OnceLock<Box<CommandMetrics>>]>,
}

/// Every thread's [`ThreadCounters`].
#[derive(Debug, Default)]
struct Threads {
    /// All of them, for scrapes.
    all: Vec<Arc<ThreadCounters>>,
    /// Those of threads that ended, for the next thread that records.
    free: Vec<Arc<ThreadCounters>>,
}

/// The calling thread's counters, taken on its first recorded command.
struct Local(std::cell::OnceCell<Arc<ThreadCounters>>);

impl Drop for Local {
    fn drop(&mut self) {
        if let (Some(counters), Some(registry)) = (self.0.take(), registry()) {
            registry.commands.lock_threads().free.push(counters);
        }
    }
}

thread_local! {
    static LOCAL: Local = const { Local(std::cell::OnceCell::new()) };
}

/// [`names::COMMAND_DURATION_BUCKETS`] in nanoseconds.
static BUCKET_NANOS: std::sync::LazyLock<[u64; BUCKETS - 1]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|i| {
        // Whole nanoseconds: every bound is a multiple of 10 µs.
        (names::COMMAND_DURATION_BUCKETS[i] * 1e9).round() as u64
    })
});

/// Every command's metrics: a slot per command-table name, filled on first use so that only
/// commands that were served appear in a scrape.
#[derive(Debug)]
struct CommandTable {
    /// Every name of the command table (subcommands included), in table order.
    names: Vec<&'static str>,
    /// Position of each name in `names` and `slots`.
    index: HashMap<&'static str, usize>,
    /// The same, by the address of the name's text: the data path passes the command
    /// table's own `&'static str`, so this finds it without hashing the name (once per
    /// request); `index` answers for an equal name at another address.
    by_addr: HashMap<usize, usize, BuildHasherDefault<AddrHasher>>,
    /// Position in `names` and `slots` of each [`CommandId`](redshard_protocol::command::CommandId)
    /// (as `usize`), [`NO_SLOT`] for the ids not in the table (the proxy's own CLIENT
    /// subcommands): what [`command_spec`] looks a command up by, without hashing.
    by_id: Box<[u32]>,
    /// The metrics of `names[i]` recorded by a thread while its own were being dropped (it
    /// was ending), once used; the threads' own are in `threads`.
    slots: Box<[OnceLock<CommandMetrics>]>,
    /// Every thread's own metrics of the table's commands.
    threads: Mutex<Threads>,
    /// Names the data path passed that are not in the table (the proxy's own CLIENT
    /// subcommands); few, so a locked list.
    others: Mutex<Vec<(&'static str, Arc<CommandMetrics>)>>,
}

/// [`CommandTable::by_id`] of an id that has no slot of its own.
const NO_SLOT: u32 = u32::MAX;

/// Hashes a name's address (one multiply, folded), for [`CommandTable::by_addr`].
#[derive(Debug, Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let product = u128::from(n) * 0x9E37_79B9_7F4A_7C15;
        // Both halves, so the low bits (the bucket) depend on every bit of the address.
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

impl CommandTable {
    fn new() -> Self {
        let names: Vec<&'static str> = redshard_protocol::command::all_specs()
            .map(|spec| spec.name)
            .collect();
        let index = names.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let by_addr = names
            .iter()
            .enumerate()
            .map(|(i, &n)| (n.as_ptr() as usize, i))
            .collect();
        let mut by_id = vec![NO_SLOT; redshard_protocol::command::every_spec().count()];
        for (i, spec) in redshard_protocol::command::all_specs().enumerate() {
            let id = spec.id as usize;
            if id >= by_id.len() {
                by_id.resize(id + 1, NO_SLOT);
            }
            by_id[id] = u32::try_from(i).unwrap_or(NO_SLOT);
        }
        Self {
            by_id: by_id.into_boxed_slice(),
            slots: names.iter().map(|_| OnceLock::new()).collect(),
            threads: Mutex::new(Threads::default()),
            names,
            index,
            by_addr,
            others: Mutex::new(Vec::new()),
        }
    }

    /// [`CommandTable::record`] for `spec`'s name, found by its id: the same slot, since a
    /// table spec's id and name go together (checked: a spec whose name is not the table's
    /// own text for its id goes by name).
    fn record_spec(
        &self,
        spec: &'static redshard_protocol::command::CommandSpec,
        nanos: u64,
        failed: bool,
    ) {
        let slot = self
            .by_id
            .get(spec.id as usize)
            .map(|&i| i as usize)
            .filter(|&i| {
                self.names
                    .get(i)
                    .is_some_and(|n| std::ptr::eq(*n, spec.name))
            });
        match slot {
            Some(i) => self.record_at(i, nanos, failed),
            None => self.record(spec.name, nanos, failed),
        }
    }

    /// Records one call of `cmd`, creating its metrics on first use.
    fn record(&self, cmd: &'static str, nanos: u64, failed: bool) {
        let found = self
            .by_addr
            .get(&(cmd.as_ptr() as usize))
            .filter(|&&i| self.names[i].len() == cmd.len())
            .or_else(|| self.index.get(cmd));
        if let Some(&i) = found {
            self.record_at(i, nanos, failed);
            return;
        }
        let metrics = {
            let mut others = self.others.lock().unwrap_or_else(PoisonError::into_inner);
            match others.iter().find(|(name, _)| *name == cmd) {
                Some((_, metrics)) => Arc::clone(metrics),
                None => {
                    let metrics = Arc::new(CommandMetrics::new());
                    others.push((cmd, Arc::clone(&metrics)));
                    metrics
                }
            }
        };
        metrics.record(nanos, failed);
    }

    /// Records one call of `names[i]` in the calling thread's own metrics (in the shared
    /// ones while the thread is ending).
    fn record_at(&self, i: usize, nanos: u64, failed: bool) {
        let own = LOCAL.try_with(|local| {
            let counters = local.0.get_or_init(|| self.adopt());
            counters.slots[i]
                .get_or_init(|| Box::new(CommandMetrics::new()))
                .record_alone(nanos, failed);
        });
        if own.is_err() {
            self.slots[i]
                .get_or_init(CommandMetrics::new)
                .record(nanos, failed);
        }
    }

    /// Counters for a thread that records its first command: those of a thread that ended,
    /// or new ones.
    fn adopt(&self) -> Arc<ThreadCounters> {
        let mut threads = self.lock_threads();
        if let Some(counters) = threads.free.pop() {
            return counters;
        }
        let counters = Arc::new(ThreadCounters {
            slots: self.names.iter().map(|_| OnceLock::new()).collect(),
        });
        threads.all.push(Arc::clone(&counters));
        counters
    }

    fn lock_threads(&self) -> std::sync::MutexGuard<'_, Threads> {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the per-command metrics of every command used so far, sorted by name.
    fn render(&self, namespace: &str, out: &mut String) {
        let empty = || Counts {
            failed: 0,
            nanos: 0,
            buckets: [0; BUCKETS],
        };
        let mut used: Vec<(&str, Counts)> = Vec::new();
        {
            let threads = self.lock_threads();
            for (i, (name, shared)) in self.names.iter().zip(self.slots.iter()).enumerate() {
                let mut sum = None;
                let own = threads
                    .all
                    .iter()
                    .filter_map(|t| t.slots[i].get().map(|m| &**m));
                for m in shared.get().into_iter().chain(own) {
                    m.add_to(sum.get_or_insert_with(empty));
                }
                if let Some(sum) = sum {
                    used.push((name, sum));
                }
            }
        }
        for (name, m) in self
            .others
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let mut sum = empty();
            m.add_to(&mut sum);
            used.push((name, sum));
        }
        if used.is_empty() {
            return;
        }
        used.sort_unstable_by_key(|&(name, _)| name);
        let mut text = Text::new(out, namespace);
        text.header(&names::COMMANDS_TOTAL);
        for (name, m) in &used {
            let calls = m.buckets.iter().sum::<u64>();
            text.sample(&names::COMMANDS_TOTAL, &[name], calls);
        }
        text.header(&names::COMMANDS_FAILED_CALLS_TOTAL);
        for (name, m) in &used {
            text.sample(&names::COMMANDS_FAILED_CALLS_TOTAL, &[name], m.failed);
        }
        text.header(&names::COMMANDS_DURATION_SECONDS_TOTAL);
        for (name, m) in &used {
            let total = Seconds(m.nanos);
            text.sample(&names::COMMANDS_DURATION_SECONDS_TOTAL, &[name], total);
        }
        let histogram = &names::COMMAND_DURATION_SECONDS;
        text.header(histogram);
        for (name, m) in &used {
            // The count is the +Inf bucket as summed here, so the series agree with each
            // other.
            let mut cumulative = 0;
            for (i, bucket) in m.buckets.iter().enumerate() {
                cumulative += bucket;
                match names::COMMAND_DURATION_BUCKETS.get(i) {
                    Some(le) => text.bucket(histogram, &[name], &le.to_string(), cumulative),
                    None => text.bucket(histogram, &[name], "+Inf", cumulative),
                }
            }
            text.suffixed(histogram, "_sum", &[name], Seconds(m.nanos));
            text.suffixed(histogram, "_count", &[name], cumulative);
        }
    }
}

/// Nanoseconds written as seconds with full precision.
struct Seconds(u64);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

#[cfg(test)]
mod tests;
