//! The proxy's users: the configured ones (`password` for `default`, each `[[user]]` with
//! its access level written as ACL rules), changed at run time by `ACL SETUSER`,
//! `ACL DELUSER` and `CONFIG SET requirepass`, and the ACL log of refusals.
//!
//! Sessions check each request against their user's rules ([`LiveUser`]): one relaxed load
//! of [`Users::generation`] tells a session whether any user changed since it last looked;
//! a user whose rules allow everything (the default user, `access = "all"`) costs nothing
//! more.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redshard_config::{Access, Config};
use redshard_protocol::acl::{self, SetUserError, User};
use redshard_protocol::command::{self, Flags};

/// A user as sessions check it.
#[derive(Debug)]
pub struct LiveUser {
    /// The rules.
    pub rules: User,
    /// Its rules allow every command, key and channel: no check per request.
    pub unrestricted: bool,
    /// The backend user its scripts run as on the nodes (see [`crate::backend::acl`]): the
    /// configured access level while its rules are still that level's, `all` while they
    /// allow everything; `None` for other rules, whose scripts the proxy refuses (a script's
    /// `redis.call()`s are checked by the node, which does not know them).
    pub scripts: Option<Access>,
}

impl LiveUser {
    fn new(rules: User, level: Option<Access>) -> Self {
        let unrestricted = rules.allows_everything();
        let scripts = if unrestricted {
            Some(Access::All)
        } else {
            level
        };
        Self {
            rules,
            unrestricted,
            scripts,
        }
    }
}

/// The ACL rules of a configured access level (what redshard refuses every client is not
/// listed: it is the same for every user, see `docs/access-control.md`).
#[must_use]
pub fn level_rules(access: Access) -> String {
    match access {
        Access::All => "+@all".into(),
        Access::NoDangerous => {
            "+@all -@dangerous -script|flush -function|flush -function|restore".into()
        }
        // What may write or replicate, and administration; the `_RO` scripts stay.
        Access::ReadOnly => {
            let mut rules = String::from("+@all -@write -@admin");
            for spec in command::all_specs().filter(|s| {
                s.flags.contains(Flags::MAY_REPLICATE)
                    && !s.flags.intersects(Flags::WRITE.union(Flags::ADMIN))
            }) {
                rules.push_str(" -");
                rules.push_str(spec.name);
            }
            rules.push_str(" -script|flush -memory|purge");
            rules
        }
    }
}

/// The user a configured identity starts as: `on`, its password, every key and channel, its
/// level's commands.
fn configured(name: &str, password: Option<&str>, access: Access) -> LiveUser {
    let mut rules = User::new(name);
    let mut ops: Vec<Vec<u8>> = vec![b"on".to_vec(), b"~*".to_vec(), b"&*".to_vec()];
    match password {
        Some(p) => ops.push([b">", p.as_bytes()].concat()),
        None => ops.push(b"nopass".to_vec()),
    }
    ops.extend(
        level_rules(access)
            .split(' ')
            .map(|r| r.as_bytes().to_vec()),
    );
    if let Err(e) = rules.apply_all(&ops) {
        // The level rules name commands of the table: they always apply.
        tracing::error!(user = name, error = ?e, "configured user's rules refused");
    }
    LiveUser::new(rules, Some(access))
}

/// One entry of the ACL log (Redis 7.0's `ACLLogEntry`).
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// Refusals grouped into it.
    pub count: u64,
    /// `command`, `key`, `channel` or `auth`.
    pub reason: &'static str,
    /// `toplevel` or `multi`.
    pub context: &'static str,
    /// The command, key or channel refused (`AUTH` for a failed authentication).
    pub object: Vec<u8>,
    /// The user (for `auth`, the name given).
    pub username: Vec<u8>,
    /// When it last happened.
    pub at: Instant,
    /// The client's `CLIENT LIST` line, at the last refusal.
    pub client_info: String,
}

/// The users another proxy of the fleet deleted ([`Users::sync`]), whose clients are
/// disconnected, and those it took channels from, whose subscribed clients are.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Users that no longer exist.
    pub gone: Vec<String>,
    /// Users that lost a channel pattern (or every channel).
    pub lost_channels: Vec<String>,
}

/// The users and the ACL log, shared by every session.
#[derive(Debug)]
pub struct Users {
    /// Every user by name (sorted, as Redis lists them); replaced whole on each change.
    set: ArcSwap<BTreeMap<String, Arc<LiveUser>>>,
    /// Bumped after each change: a session compares it with the one it last saw.
    generation: AtomicU64,
    /// One change at a time (each reads, changes and replaces the whole set).
    write: Mutex<()>,
    /// The ACL log, newest first.
    log: Mutex<VecDeque<LogEntry>>,
    /// What `CONFIG GET requirepass` shows: the configured `password`, then the last
    /// `CONFIG SET requirepass` (kept in memory only, as Redis keeps it).
    requirepass: Mutex<Vec<u8>>,
    /// The configured users, whose access levels users read back from the topology keep
    /// while their permissions are still the level's.
    configured: BTreeMap<String, Arc<LiveUser>>,
    /// Changes made here (ACL SETUSER, DELUSER, CONFIG SET requirepass), counted under the
    /// `write` lock as they are made.
    local_changes: AtomicU64,
    /// How many of them the controller has saved with the topology (or undone): while
    /// fewer than `local_changes`, a topology installed meanwhile (an epoch made before the
    /// change was saved) must not replace the users, or the change would be lost before it
    /// is saved ([`Users::sync`]).
    settled_changes: AtomicU64,
}

/// Redis groups a refusal into an equal entry at most this old.
const GROUPING: Duration = Duration::from_secs(60);

impl Users {
    /// The configured users: `default` (with `password`, or `nopass`) and every `[[user]]`.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        let mut set = BTreeMap::new();
        set.insert(
            "default".to_owned(),
            Arc::new(configured(
                "default",
                config.password.as_deref(),
                Access::All,
            )),
        );
        for u in &config.users {
            set.insert(
                u.name.clone(),
                Arc::new(configured(&u.name, Some(&u.password), u.access)),
            );
        }
        Self {
            configured: set.clone(),
            set: ArcSwap::from_pointee(set),
            generation: AtomicU64::new(0),
            write: Mutex::new(()),
            log: Mutex::new(VecDeque::new()),
            requirepass: Mutex::new(config.password.clone().unwrap_or_default().into_bytes()),
            local_changes: AtomicU64::new(0),
            settled_changes: AtomicU64::new(0),
        }
    }

    /// How many changes were made here so far: what [`Users::settled`] is told once the
    /// users as they are now are saved (or undone).
    #[must_use]
    pub fn local_changes(&self) -> u64 {
        self.local_changes.load(Ordering::Acquire)
    }

    /// The controller saved (or undid) the changes made here up to `count` (a
    /// [`Users::local_changes`] read before it took the users to save): a topology may
    /// replace the users again once every change is settled.
    pub fn settled(&self, count: u64) {
        self.settled_changes.fetch_max(count, Ordering::AcqRel);
    }

    /// Counts a change made here (the `write` lock is held).
    fn count_local_change(&self) {
        self.local_changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes so far: a session that saw another number looks its user up again.
    #[must_use]
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The user called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<Arc<LiveUser>> {
        self.set.load().get(name).cloned()
    }

    /// The user called `name` as a client wrote it: none for a name that is not UTF-8 (no
    /// user has one: `ACL SETUSER` refuses them), rather than the user its lossy text
    /// would name (`\xfe` and `\xff` would both be `U+FFFD`).
    #[must_use]
    pub fn get_bytes(&self, name: &[u8]) -> Option<Arc<LiveUser>> {
        self.get(std::str::from_utf8(name).ok()?)
    }

    /// Every user, sorted by name.
    #[must_use]
    pub fn all(&self) -> Arc<BTreeMap<String, Arc<LiveUser>>> {
        self.set.load_full()
    }

    /// Whether a new connection starts authenticated (as `default`): Redis's rule, the
    /// default user is `on` and `nopass`.
    #[must_use]
    pub fn open_by_default(&self) -> bool {
        self.get("default")
            .is_some_and(|d| d.rules.enabled && d.rules.nopass)
    }

    /// Whether AUTH can fail at all: some user needs a password (or is off). Without one,
    /// failed attempts are not guesses and are not throttled.
    #[must_use]
    pub fn any_password(&self) -> bool {
        self.set
            .load()
            .values()
            .any(|u| !u.rules.nopass || !u.rules.enabled)
    }

    fn change<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Arc<LiveUser>>) -> T) -> T {
        let _one = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = (**self.set.load()).clone();
        let out = f(&mut next);
        self.set.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::AcqRel);
        out
    }

    /// `ACL SETUSER name rules...`: creates or changes the user, all rules or none.
    ///
    /// # Errors
    ///
    /// Redis's refusal of a rule; nothing changed then.
    /// Returns whether the change took channels away from the user (its subscribed clients
    /// must then be disconnected, as Redis does).
    pub fn set_user<A: AsRef<[u8]>>(&self, name: &str, ops: &[A]) -> Result<bool, SetUserError> {
        self.change(|set| {
            let known = set.get(name);
            let mut rules = known.map_or_else(|| User::new(name), |u| u.rules.clone());
            rules.apply_all(ops)?;
            // A configured user whose permissions did not change (a new password, `off`)
            // keeps its level's backend user for its scripts.
            let level = known
                .filter(|k| k.rules.root == rules.root && k.rules.selectors == rules.selectors)
                .and_then(|k| k.scripts);
            let lost = known.is_some_and(|k| k.rules.loses_channels(&rules));
            set.insert(name.to_owned(), Arc::new(LiveUser::new(rules, level)));
            self.count_local_change();
            Ok(lost)
        })
    }

    /// `ACL DELUSER`: removes the users named (never `default`); returns how many existed.
    pub fn delete(&self, names: &[String]) -> usize {
        self.change(|set| {
            let deleted = names
                .iter()
                .filter(|n| n.as_str() != "default" && set.remove(n.as_str()).is_some())
                .count();
            if deleted > 0 {
                self.count_local_change();
            }
            deleted
        })
    }

    /// `CONFIG SET requirepass`: the default user's password (Redis's
    /// `ACLUpdateDefaultUserPassword`: `resetpass`, then `>password`, or `nopass` for "").
    pub fn set_default_password(&self, password: &[u8]) {
        *self
            .requirepass
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = password.to_vec();
        self.change(|set| {
            let mut rules = set
                .get("default")
                .map_or_else(User::default_user, |u| u.rules.clone());
            let mut ops = vec![b"resetpass".to_vec()];
            if password.is_empty() {
                ops.push(b"nopass".to_vec());
            } else {
                ops.push([b">", password].concat());
            }
            // resetpass, >pw and nopass always apply.
            let _ = rules.apply_all(&ops);
            let level = set.get("default").and_then(|u| u.scripts);
            set.insert("default".to_owned(), Arc::new(LiveUser::new(rules, level)));
            self.count_local_change();
        });
    }

    /// `CONFIG GET requirepass`: as Redis, the last value set (the configured `password`,
    /// then `CONFIG SET requirepass`), not what `ACL SETUSER default` did since.
    #[must_use]
    pub fn requirepass(&self) -> Vec<u8> {
        self.requirepass
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every user as its `ACL LIST` line, sorted by name: what the topology persists.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.set
            .load()
            .values()
            .map(|u| String::from_utf8_lossy(&describe(u)).into_owned())
            .collect()
    }

    /// Makes the users those of `lines` (the topology's, see [`Users::lines`]) unless they
    /// already are: at start from a persisted topology, and when another proxy of the fleet
    /// changed them. A line that does not parse is skipped and logged. Nothing changes while
    /// a change made here is not settled yet ([`Users::settled`]): the topology installed
    /// then may predate it.
    ///
    /// Returns the users whose clients must be disconnected, as Redis would have on the
    /// proxy that made the change (see [`Dropped`]).
    pub fn sync(&self, lines: Option<&[String]>) -> Dropped {
        self.replace_with(lines, false)
    }

    /// [`Users::sync`], or with `undo` whatever changes here are unsettled (their save
    /// failed: the topology's users win).
    fn replace_with(&self, lines: Option<&[String]>, undo: bool) -> Dropped {
        let Some(lines) = lines else {
            return Dropped::default();
        };
        if self.lines() == lines {
            return Dropped::default();
        }
        let before = self.set.load_full();
        let replaced = self.change(|set| {
            let unsettled = self.settled_changes.load(Ordering::Acquire)
                < self.local_changes.load(Ordering::Acquire);
            if unsettled && !undo {
                return false;
            }
            let mut next = BTreeMap::new();
            for line in lines {
                match self.parse_line(line) {
                    Some(user) => {
                        next.insert(user.rules.name.clone(), Arc::new(user));
                    }
                    None => tracing::error!(line = %line, "a persisted ACL user does not parse; skipped"),
                }
            }
            // Never Redis's open default user in place of a persisted one that is missing or
            // did not parse: that would drop its password. Closed instead (`off`, no
            // command), until the topology's line is fixed.
            next.entry("default".to_owned()).or_insert_with(|| {
                tracing::error!("the persisted users have no usable `default` user; it is off until fixed");
                Arc::new(LiveUser::new(User::new("default"), None))
            });
            *set = next;
            true
        });
        if !replaced {
            return Dropped::default();
        }
        let after = self.set.load();
        let mut dropped = Dropped::default();
        for (name, user) in before.iter() {
            match after.get(name) {
                None => dropped.gone.push(name.clone()),
                Some(now) if user.rules.loses_channels(&now.rules) => {
                    dropped.lost_channels.push(name.clone());
                }
                Some(_) => {}
            }
        }
        dropped
    }

    /// Back to the users of the topology (`lines`, or the configured ones when it has none):
    /// after a change this proxy could not save.
    pub fn revert(&self, lines: Option<&[String]>) {
        match lines {
            Some(lines) => {
                self.replace_with(Some(lines), true);
            }
            None => self.change(|set| set.clone_from(&self.configured)),
        }
    }

    /// The first of `lines` (users as [`Users::lines`] writes them, as a proxy of a fleet
    /// sends them to the leader) that does not describe a user, or `"no default user"` when
    /// none is `default`; `None` when they all read back.
    #[must_use]
    pub fn unreadable(&self, lines: &[String]) -> Option<String> {
        if let Some(bad) = lines.iter().find(|l| self.parse_line(l).is_none()) {
            return Some(bad.clone());
        }
        (!lines.iter().any(|l| l.starts_with("user default ")))
            .then(|| "no default user".to_owned())
    }

    /// A user from its `ACL LIST` line, keeping its configured level while its permissions
    /// are still the level's.
    fn parse_line(&self, line: &str) -> Option<LiveUser> {
        let mut words = line.split(' ');
        if words.next() != Some("user") {
            return None;
        }
        let name = words
            .next()
            .filter(|n| acl::valid_name(n.as_bytes()) && !n.is_empty())?;
        let mut rules = User::new(name);
        rules.apply_all(&described_ops(words)).ok()?;
        let level = self
            .configured
            .get(name)
            .filter(|c| c.rules.root == rules.root && c.rules.selectors == rules.selectors)
            .and_then(|c| c.scripts);
        Some(LiveUser::new(rules, level))
    }

    /// Records a refusal in the ACL log, grouped with an equal recent entry as Redis does
    /// (same reason, context, object and user, within 60 s, among the 10 newest).
    pub fn log(&self, mut entry: LogEntry, max_len: usize) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let found = log.iter().take(10).position(|e| {
            e.reason == entry.reason
                && e.context == entry.context
                && e.object == entry.object
                && e.username == entry.username
                && entry.at.saturating_duration_since(e.at) <= GROUPING
        });
        if let Some(at) = found {
            if let Some(mut known) = log.remove(at) {
                known.count += 1;
                known.at = entry.at;
                known.client_info = std::mem::take(&mut entry.client_info);
                log.push_front(known);
            }
            return;
        }
        log.push_front(entry);
        log.truncate(max_len);
    }

    /// The newest `count` entries of the ACL log.
    #[must_use]
    pub fn log_entries(&self, count: usize) -> Vec<LogEntry> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().take(count).cloned().collect()
    }

    /// `ACL LOG RESET`.
    pub fn reset_log(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Checks `AUTH [name] password` against the live users: the user when it is `on` and
    /// the password is one of its own (or it is `nopass`).
    #[must_use]
    pub fn authenticate(&self, name: &str, password: &[u8]) -> Option<Arc<LiveUser>> {
        let user = self.get(name)?;
        user.rules.password_ok(password).then_some(user)
    }
}

/// The rules of an `ACL LIST` line (after `user name`) as `ACL SETUSER` arguments, each
/// selector one argument. A selector's description ends with its commands (`+...` or
/// `-...`), so it closes at the first such word ending in `)`: a key or channel pattern
/// ending in `)` inside it (`(~a) ... +get)`) does not close it, as it would if the words
/// were merged as `ACL SETUSER` merges its arguments.
fn described_ops<'a>(words: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut ops: Vec<String> = Vec::new();
    let mut open: Option<String> = None;
    for word in words {
        match open.as_mut() {
            Some(selector) => {
                selector.push(' ');
                selector.push_str(word);
                if word.ends_with(')') && (word.starts_with('+') || word.starts_with('-')) {
                    ops.extend(open.take());
                }
            }
            None if word.starts_with('(') => {
                let first = &word[1..];
                if word.len() > 1
                    && word.ends_with(')')
                    && (first.starts_with('+') || first.starts_with('-'))
                {
                    ops.push(word.to_owned());
                } else {
                    open = Some(word.to_owned());
                }
            }
            None => ops.push(word.to_owned()),
        }
    }
    // An unclosed selector is refused by `apply_all` as Redis refuses it.
    ops.extend(open);
    ops
}

/// The description of a user for `ACL LIST`.
#[must_use]
pub fn describe(user: &LiveUser) -> Vec<u8> {
    acl::describe_user(&user.rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        Users::from_config(&Config {
            password: Some("pw".into()),
            ..Config::default()
        })
    }

    /// A topology installed after a change here but before it was saved predates it: it
    /// must not undo the change (which would then be "saved" as already there, and lost).
    #[test]
    fn a_topology_older_than_an_unsaved_change_does_not_undo_it() {
        let users = users();
        let persisted = users.lines();
        users
            .set_user("app", &["on", "nopass", "~*", "+@all"])
            .unwrap();
        let made = users.local_changes();
        assert_eq!(users.sync(Some(&persisted)), Dropped::default());
        assert!(users.get("app").is_some());
        // Once saved, a topology's users replace them again (another proxy's change).
        users.settled(made);
        assert_eq!(users.sync(Some(&persisted)).gone, ["app".to_owned()]);
        assert!(users.get("app").is_none());
        // A change whose save failed is undone even before it is settled.
        assert_eq!(users.delete(&["nobody".to_owned()]), 0);
        assert_eq!(
            users.local_changes(),
            made,
            "nothing deleted, nothing to save"
        );
        users.set_default_password(b"new");
        assert!(users.local_changes() > made);
        users.revert(Some(&persisted));
        assert!(users.authenticate("default", b"pw").is_some());
    }

    #[test]
    fn configured_users_and_changes() {
        let users = users();
        assert!(!users.open_by_default());
        assert!(users.authenticate("default", b"pw").is_some());
        assert!(users.authenticate("default", b"nope").is_none());
        assert!(users.get("default").unwrap().unrestricted);
        let seen = users.generation();
        users
            .set_user("alice", &["on", ">a", "+get", "~k*"])
            .unwrap();
        assert_ne!(users.generation(), seen);
        let alice = users.authenticate("alice", b"a").unwrap();
        assert!(!alice.unrestricted);
        assert_eq!(alice.scripts, None);
        assert!(users.set_user("alice", &["+nope"]).is_err());
        // The default user keeps its level (scripts as the proxy's client user) across a
        // password change; new rules drop it.
        users.set_user("default", &[">other"]).unwrap();
        assert_eq!(users.get("default").unwrap().scripts, Some(Access::All));
        assert!(users.get("alice").unwrap().rules.password_ok(b"a"));
        assert_eq!(
            users.delete(&["alice".into(), "bob".into(), "default".into()]),
            1
        );
        assert!(users.get("alice").is_none());
        users.set_default_password(b"");
        assert!(users.open_by_default());
        users.set_default_password(b"x");
        assert!(users.authenticate("default", b"x").is_some());
        assert!(users.authenticate("default", b"pw").is_none());
    }

    #[test]
    fn level_rules_are_the_levels() {
        let user = configured("r", Some("p"), Access::ReadOnly);
        assert_eq!(user.scripts, Some(Access::ReadOnly));
        let get = command::lookup(b"get").unwrap();
        let set = command::lookup(b"set").unwrap();
        assert!(user.rules.check(get, &["get", "k"]).is_ok());
        assert!(user.rules.check(set, &["set", "k", "v"]).is_err());
    }

    #[test]
    fn the_log_groups_and_is_bounded() {
        let users = users();
        let entry = |object: &str| LogEntry {
            count: 1,
            reason: "command",
            context: "toplevel",
            object: object.as_bytes().to_vec(),
            username: b"u".to_vec(),
            at: Instant::now(),
            client_info: String::new(),
        };
        users.log(entry("get"), 2);
        users.log(entry("get"), 2);
        assert_eq!(users.log_entries(10).len(), 1);
        assert_eq!(users.log_entries(10)[0].count, 2);
        users.log(entry("set"), 2);
        users.log(entry("hget"), 2);
        let objects: Vec<_> = users
            .log_entries(10)
            .into_iter()
            .map(|e| e.object)
            .collect();
        assert_eq!(objects, vec![b"hget".to_vec(), b"set".to_vec()]);
        users.reset_log();
        assert!(users.log_entries(10).is_empty());
    }

    #[test]
    fn lines_with_parentheses_in_selector_patterns_read_back() {
        let users = users();
        users
            .set_user("default", &["(~a) &b) +get)", "(%R~c) +set)"])
            .unwrap();
        users.set_user("app", &["on", ">a", "(~x) -@all)"]).unwrap();
        let lines = users.lines();
        let other = Users::from_config(&Config::default());
        other.sync(Some(&lines));
        assert_eq!(other.lines(), lines);
        assert!(other.authenticate("default", b"pw").is_some());
        assert!(!other.open_by_default());
    }

    #[test]
    fn sync_says_whose_clients_to_disconnect() {
        let users = users();
        users.set_user("gone", &["on", "&*"]).unwrap();
        users.set_user("narrowed", &["on", "&*"]).unwrap();
        users.set_user("kept", &["on", "&a"]).unwrap();
        let other = Users::from_config(&Config::default());
        other.sync(Some(&users.lines()));
        users.delete(&["gone".into()]);
        users
            .set_user("narrowed", &["resetchannels", "&b"])
            .unwrap();
        users.set_user("kept", &["&b", "+get"]).unwrap();
        assert_eq!(
            other.sync(Some(&users.lines())),
            Dropped {
                gone: vec!["gone".into()],
                lost_channels: vec!["narrowed".into()],
            }
        );
        assert_eq!(other.sync(Some(&users.lines())), Dropped::default());
    }

    #[test]
    fn a_default_user_that_does_not_parse_is_closed_not_open() {
        let other = Users::from_config(&Config::default());
        other.sync(Some(&["user default on #nothex ~* &* +@all".to_owned()]));
        assert!(!other.open_by_default());
        assert!(other.authenticate("default", b"").is_none());
        other.sync(Some(&["user app on nopass ~* &* +@all".to_owned()]));
        assert!(!other.open_by_default());
    }

    #[test]
    fn lines_read_back_as_the_same_users() {
        let users = users();
        users
            .set_user(
                "app",
                &[
                    "on",
                    ">a",
                    "%R~r*",
                    "&n*",
                    "+get",
                    "+select|0",
                    "(+set ~w*)",
                ],
            )
            .unwrap();
        users.set_default_password(b"x");
        let lines = users.lines();
        let other = Users::from_config(&Config::default());
        other.sync(Some(&lines));
        assert_eq!(other.lines(), lines);
        assert!(other.authenticate("app", b"a").is_some());
        assert!(other.authenticate("default", b"x").is_some());
        // The default user keeps its level: its permissions are still `all`'s.
        assert_eq!(other.get("default").unwrap().scripts, Some(Access::All));
        assert_eq!(other.get("app").unwrap().scripts, None);
        // Reverting to a topology without users is the configured set again.
        other.revert(None);
        assert!(other.get("app").is_none());
        assert!(other.open_by_default());
    }
}
