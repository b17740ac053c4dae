//! Redis 7.0's ACL users, pure: the `ACL SETUSER` rule syntax ([`User::apply`]), each
//! user in a form cheap to check ([`Selector`]: a bitset over the command table, key
//! patterns with read/write permissions, channel patterns), the check of a request
//! ([`User::check`], as Redis 7.0's `ACLCheckAllUserCommandPerm`), and the user's
//! description as `ACL LIST` and `ACL GETUSER` show it ([`describe`]).
//!
//! Ported from Redis 7.0.15's `src/acl.c`, and tested against a live redis-server 7.0
//! (`tests/integration/acl_rules.rs` sends the same rules to both and compares the answers).
//! What differs:
//! - the single-command rules of a description (`+get -hset ...`, after the categories)
//!   come in the command table's order; Redis 7.0 writes them in the order of its command
//!   dictionary, which depends on a hash seed chosen at random at each start, so two
//!   redis-servers given the same rules do not agree on it either;
//! - a selector's rules are split at spaces (Redis also honours quotes there).

mod describe;
#[cfg(test)]
mod tests;

pub use describe::{describe_commands, describe_user};

use smallvec::SmallVec;

use crate::command::{self, AclCategories, ArgList, CommandId, CommandSpec, Flags, KeySpecFlags};

/// 64-bit words in a [`CommandBits`]: room for every [`CommandId`] (a test checks).
const WORDS: usize = 8;

/// One bit per command and subcommand of the table, by [`CommandId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandBits([u64; WORDS]);

impl CommandBits {
    /// No command.
    pub const NONE: Self = Self([0; WORDS]);
    /// Every command, those the table will know later included (Redis's `+@all`).
    pub const ALL: Self = Self([u64::MAX; WORDS]);

    /// Whether `id` is set.
    #[must_use]
    #[inline]
    pub fn get(&self, id: CommandId) -> bool {
        let n = id as usize;
        self.0[n / 64] & (1 << (n % 64)) != 0
    }

    fn set(&mut self, id: CommandId, on: bool) {
        let n = id as usize;
        if on {
            self.0[n / 64] |= 1 << (n % 64);
        } else {
            self.0[n / 64] &= !(1 << (n % 64));
        }
    }
}

/// What a key pattern allows (`~p`: both; `%R~p`, `%W~p`, `%RW~p`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPattern {
    /// The key may be read with it.
    pub read: bool,
    /// The key may be written with it.
    pub write: bool,
    /// The glob.
    pub pattern: Vec<u8>,
}

/// A set of permissions: the user's root one, or one of its `(...)` selectors. A request is
/// allowed when one selector allows its command, every key and every channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// Set by `+@all`/`allcommands`, cleared by `-@all`/`nocommands`: the description starts
    /// with `+@all` (commands added later are allowed) rather than `-@all`.
    future: bool,
    /// The commands allowed.
    allowed: CommandBits,
    /// Commands allowed only with these first arguments (`+select|0`), in the order added.
    firstargs: Vec<(CommandId, Vec<Vec<u8>>)>,
    /// `allkeys` / `~*`.
    allkeys: bool,
    /// The key patterns, in the order added.
    keys: Vec<KeyPattern>,
    /// `allchannels` / `&*`.
    allchannels: bool,
    /// The channel patterns, in the order added.
    channels: Vec<Vec<u8>>,
}

/// The `sanitize-payload` / `skip-sanitize-payload` flag: Redis keeps it and shows it (it
/// governs RESTORE's payload checks on the node; the proxy only keeps and shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sanitize {
    /// Neither flag (a new user, or the default user).
    Unset,
    /// `sanitize-payload` (set by `reset`).
    Sanitize,
    /// `skip-sanitize-payload`.
    Skip,
}

/// A user, as Redis 7.0 keeps one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The name.
    pub name: String,
    /// `on` / `off`.
    pub enabled: bool,
    /// `nopass`: any password authenticates.
    pub nopass: bool,
    /// The payload-sanitizing flag.
    pub sanitize: Sanitize,
    /// SHA-256 hex (lowercase) of each password, in the order added.
    pub passwords: Vec<String>,
    /// The root permissions.
    pub root: Selector,
    /// The `(...)` selectors, in the order added.
    pub selectors: Vec<Selector>,
}

/// Why one `ACL SETUSER` rule was refused (Redis 7.0's `errno` of `ACLSetUser`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleError {
    /// `ENOENT`: no such command or category.
    UnknownName,
    /// `EINVAL`.
    Syntax,
    /// `EEXIST`: a key pattern after `allkeys`.
    KeyAfterAllKeys,
    /// `EISDIR`: a channel pattern after `allchannels`.
    ChannelAfterAllChannels,
    /// `ENODEV`: removing a password the user does not have.
    NoSuchPassword,
    /// `EBADMSG`: a `#`/`!` hash that is not 64 lowercase hex digits.
    BadHash,
    /// `ECHILD`: `+config|get|x`.
    SubcommandFirstArg,
}

/// Why `ACL SETUSER` failed as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetUserError {
    /// A rule was refused (the rule as given, a selector as merged).
    Rule {
        /// The rule.
        op: Vec<u8>,
        /// Why.
        why: RuleError,
    },
    /// A selector's `(` without its `)`.
    UnmatchedParen {
        /// The argument the selector starts at.
        op: Vec<u8>,
    },
}

/// Why a request is refused ([`User::check`]), with the argument index of the key or
/// channel that no selector allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The command (`ACL_DENIED_CMD`).
    Command,
    /// The key at this argument index (`ACL_DENIED_KEY`).
    Key(usize),
    /// The channel at this argument index (`ACL_DENIED_CHANNEL`).
    Channel(usize),
}

impl Denied {
    fn rank(self) -> (u8, usize) {
        match self {
            Self::Command => (1, 0),
            Self::Key(i) => (2, i),
            Self::Channel(i) => (4, i),
        }
    }
}

/// SHA-256 of a password as lowercase hex, as Redis stores and shows it.
#[must_use]
pub fn password_hash(password: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, password);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Redis's `ACLStringHasSpaces`: a space-like or NUL byte.
fn has_spaces(s: &[u8]) -> bool {
    s.iter()
        .any(|&b| b == 0 || b == b' ' || (b'\t'..=b'\r').contains(&b))
}

/// Whether a user name is one Redis accepts in `ACL SETUSER` (no space or NUL).
#[must_use]
pub fn valid_name(name: &[u8]) -> bool {
    !has_spaces(name)
}

/// The category named `name` (without `@`, case-insensitive).
#[must_use]
pub fn category(name: &[u8]) -> Option<AclCategories> {
    AclCategories::ALL
        .iter()
        .find(|(_, n)| n.as_bytes().eq_ignore_ascii_case(name))
        .map(|(c, _)| *c)
}

/// Every spec ACL rules know: the table's commands, each followed by its subcommands.
fn acl_specs() -> impl Iterator<Item = &'static CommandSpec> {
    command::commands().flat_map(|c| std::iter::once(c).chain(command::acl_subcommands(c)))
}

impl Default for Selector {
    fn default() -> Self {
        Self::new()
    }
}

impl Selector {
    /// A selector that allows nothing (`resetkeys resetchannels -@all`).
    #[must_use]
    pub fn new() -> Self {
        Self {
            future: false,
            allowed: CommandBits::NONE,
            firstargs: Vec::new(),
            allkeys: false,
            keys: Vec::new(),
            allchannels: false,
            channels: Vec::new(),
        }
    }

    /// Whether it allows every command, key and channel: then a request needs no other check.
    #[must_use]
    pub fn allows_everything(&self) -> bool {
        self.allkeys && self.allchannels && acl_specs().all(|s| self.allowed.get(s.id))
    }

    /// Redis's `ACLChangeSelectorPerm`: the command and all its subcommands.
    fn change_perm(&mut self, spec: &CommandSpec, on: bool) {
        self.allowed.set(spec.id, on);
        self.firstargs.retain(|(id, _)| *id != spec.id);
        for sub in command::acl_subcommands(spec) {
            self.allowed.set(sub.id, on);
        }
    }

    /// `+@cat` / `-@cat`.
    fn change_category(&mut self, cat: AclCategories, on: bool) {
        for spec in command::commands() {
            if spec.acl.intersects(cat) {
                self.change_perm(spec, on);
            }
            for sub in command::acl_subcommands(spec) {
                if sub.acl.intersects(cat) {
                    self.change_perm(sub, on);
                }
            }
        }
    }

    fn set_all_commands(&mut self, on: bool) {
        self.future = on;
        self.allowed = if on {
            CommandBits::ALL
        } else {
            CommandBits::NONE
        };
        self.firstargs.clear();
    }

    /// Applies one rule, as Redis 7.0's `ACLSetSelector`.
    ///
    /// # Errors
    ///
    /// When Redis refuses the rule (see [`RuleError`]).
    pub fn apply(&mut self, op: &[u8]) -> Result<(), RuleError> {
        let is = |word: &str| op.eq_ignore_ascii_case(word.as_bytes());
        if is("allkeys") || is("~*") {
            self.allkeys = true;
            self.keys.clear();
        } else if is("resetkeys") {
            self.allkeys = false;
            self.keys.clear();
        } else if is("allchannels") || is("&*") {
            self.allchannels = true;
            self.channels.clear();
        } else if is("resetchannels") {
            self.allchannels = false;
            self.channels.clear();
        } else if is("allcommands") || is("+@all") {
            self.set_all_commands(true);
        } else if is("nocommands") || is("-@all") {
            self.set_all_commands(false);
        } else if op[0] == b'~' || op[0] == b'%' {
            self.add_key_pattern(op)?;
        } else if op[0] == b'&' {
            if self.allchannels {
                return Err(RuleError::ChannelAfterAllChannels);
            }
            let pattern = &op[1..];
            if has_spaces(pattern) {
                return Err(RuleError::Syntax);
            }
            if !self.channels.iter().any(|c| c == pattern) {
                self.channels.push(pattern.to_vec());
            }
        } else if (op[0] == b'+' || op[0] == b'-') && op.get(1) == Some(&b'@') {
            let cat = category(&op[2..]).ok_or(RuleError::UnknownName)?;
            self.change_category(cat, op[0] == b'+');
        } else if op[0] == b'+' {
            self.allow_command(&op[1..])?;
        } else if op[0] == b'-' {
            let spec = command::lookup_fullname(&op[1..]).ok_or(RuleError::UnknownName)?;
            self.change_perm(spec, false);
        } else {
            return Err(RuleError::Syntax);
        }
        Ok(())
    }

    /// `~pattern`, `%R~pattern`, `%W~pattern`, `%RW~pattern`.
    fn add_key_pattern(&mut self, op: &[u8]) -> Result<(), RuleError> {
        if self.allkeys {
            return Err(RuleError::KeyAfterAllKeys);
        }
        let (mut read, mut write) = (true, true);
        let mut offset = 1;
        if op[0] == b'%' {
            (read, write) = (false, false);
            while offset < op.len() {
                match op[offset] {
                    b'R' | b'r' if !read => read = true,
                    b'W' | b'w' if !write => write = true,
                    b'~' => {
                        offset += 1;
                        break;
                    }
                    _ => return Err(RuleError::Syntax),
                }
                offset += 1;
            }
            if !read && !write {
                return Err(RuleError::Syntax);
            }
        }
        let pattern = &op[offset.min(op.len())..];
        if has_spaces(pattern) {
            return Err(RuleError::Syntax);
        }
        match self.keys.iter_mut().find(|k| k.pattern == pattern) {
            Some(known) => {
                known.read |= read;
                known.write |= write;
            }
            None => self.keys.push(KeyPattern {
                read,
                write,
                pattern: pattern.to_vec(),
            }),
        }
        Ok(())
    }

    /// `+command`, `+container|sub`, `+command|firstarg`.
    fn allow_command(&mut self, name: &[u8]) -> Result<(), RuleError> {
        let Some(bar) = name.iter().rposition(|&b| b == b'|') else {
            let spec = command::lookup_fullname(name).ok_or(RuleError::UnknownName)?;
            self.change_perm(spec, true);
            return Ok(());
        };
        let (base, sub) = (&name[..bar], &name[bar + 1..]);
        let spec = command::lookup_fullname(base).ok_or(RuleError::UnknownName)?;
        if spec.is_subcommand() {
            return Err(RuleError::SubcommandFirstArg);
        }
        if sub.is_empty() {
            return Err(RuleError::Syntax);
        }
        if spec.has_subcommands() {
            let sub = command::lookup_fullname(name).ok_or(RuleError::UnknownName)?;
            self.change_perm(sub, true);
        } else {
            // Redis's first-arg rules (`+select|0`): deprecated there, kept for SELECT.
            match self.firstargs.iter_mut().find(|(id, _)| *id == spec.id) {
                Some((_, args)) => {
                    if !args.iter().any(|a| a.eq_ignore_ascii_case(sub)) {
                        args.push(sub.to_vec());
                    }
                }
                None => self.firstargs.push((spec.id, vec![sub.to_vec()])),
            }
        }
        Ok(())
    }

    /// Redis 7.0's `ACLSelectorCheckCmd`: the command, then every key, then every channel.
    fn check<A: ArgList + ?Sized>(
        &self,
        spec: &CommandSpec,
        args: &A,
        keys: &KeyRefs,
    ) -> Result<(), Denied> {
        if !spec.flags.contains(Flags::NO_AUTH) && !self.allowed.get(spec.id) {
            let at = if spec.is_subcommand() { 2 } else { 1 };
            let first_ok = args.len() > at
                && self
                    .firstargs
                    .iter()
                    .find(|(id, _)| *id == spec.id)
                    .is_some_and(|(_, firsts)| {
                        firsts.iter().any(|a| a.eq_ignore_ascii_case(args.arg(at)))
                    });
            if !first_ok {
                return Err(Denied::Command);
            }
        }
        if !self.allkeys {
            for &(at, flags) in keys {
                if !self.key_allowed(args.arg(at), flags) {
                    return Err(Denied::Key(at));
                }
            }
        }
        if !self.allchannels {
            let (from, pattern) = match spec.id {
                CommandId::Publish | CommandId::Spublish => (1, false),
                CommandId::Subscribe | CommandId::Ssubscribe => (1, false),
                CommandId::Psubscribe => (1, true),
                _ => return Ok(()),
            };
            let to = if matches!(spec.id, CommandId::Publish | CommandId::Spublish) {
                2.min(args.len())
            } else {
                args.len()
            };
            for at in from..to {
                if !self.channel_allowed(args.arg(at), pattern) {
                    return Err(Denied::Channel(at));
                }
            }
        }
        Ok(())
    }

    /// Redis 7.0's `ACLSelectorCheckKey`.
    fn key_allowed(&self, key: &[u8], flags: KeySpecFlags) -> bool {
        let read = flags.contains(KeySpecFlags::ACCESS);
        let write = flags.intersects(
            KeySpecFlags::INSERT
                .union(KeySpecFlags::DELETE)
                .union(KeySpecFlags::UPDATE),
        );
        self.keys.iter().any(|k| {
            (k.read || !read) && (k.write || !write) && crate::glob::matches(&k.pattern, key, false)
        })
    }

    /// Redis 7.0's `ACLCheckChannelAgainstList`: a pattern subscription must name one of the
    /// user's patterns literally.
    fn channel_allowed(&self, channel: &[u8], is_pattern: bool) -> bool {
        self.allchannels
            || self.channels.iter().any(|p| {
                if is_pattern {
                    p == channel
                } else {
                    crate::glob::matches(p, channel, false)
                }
            })
    }
}

/// A request's keys and their key-spec flags ([`CommandSpec::key_refs`]).
pub type KeyRefs = SmallVec<[(usize, KeySpecFlags); 8]>;

/// The keys of a request with their flags, as the ACL check reads them; none when the
/// command's own checks fail (the command then fails on its own).
#[must_use]
pub fn key_refs<A: ArgList + ?Sized>(spec: &CommandSpec, args: &A) -> KeyRefs {
    let mut at = SmallVec::new();
    let mut flags = SmallVec::new();
    if spec.key_refs(args, &mut at, &mut flags).is_err() {
        return KeyRefs::new();
    }
    at.into_iter().zip(flags).collect()
}

impl User {
    /// A user as `ACL SETUSER name` creates it: `off`, no password, allowed nothing.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            enabled: false,
            nopass: false,
            sanitize: Sanitize::Unset,
            passwords: Vec::new(),
            root: Selector::new(),
            selectors: Vec::new(),
        }
    }

    /// Redis's default user: `on nopass ~* &* +@all`.
    #[must_use]
    pub fn default_user() -> Self {
        let mut user = Self::new("default");
        for op in ["+@all", "~*", "&*", "on", "nopass"] {
            // These rules are valid by construction.
            let _ = user.apply(op.as_bytes());
        }
        user
    }

    /// Whether the user may run anything (its root selector allows every command, key and
    /// channel): then a request needs no check.
    #[must_use]
    pub fn allows_everything(&self) -> bool {
        self.root.allows_everything()
    }

    /// Whether a client of this user may stay subscribed to `name` (a `PSUBSCRIBE` pattern
    /// when `is_pattern`, which must then be one of the user's patterns as written), as
    /// Redis 7.0 checks a subscribed client's channels when its user's channels change
    /// (`ACLKillPubsubClientsIfNeeded`).
    #[must_use]
    pub fn subscription_allowed(&self, name: &[u8], is_pattern: bool) -> bool {
        std::iter::once(&self.root)
            .chain(self.selectors.iter())
            .any(|s| s.channel_allowed(name, is_pattern))
    }

    /// Redis 7.0's `ACLKillPubsubClientsIfNeeded` test: whether changing from `self` to
    /// `next` takes a channel pattern away, so that the user's subscribed clients must be
    /// checked, and those subscribed to what `next` no longer allows disconnected
    /// ([`subscription_allowed`](Self::subscription_allowed)); none when a selector of
    /// `next` allows every channel.
    #[must_use]
    pub fn loses_channels(&self, next: &User) -> bool {
        let selectors = |u: &User| -> Vec<Selector> {
            std::iter::once(u.root.clone())
                .chain(u.selectors.iter().cloned())
                .collect()
        };
        let upcoming = selectors(next);
        if upcoming.iter().any(|s| s.allchannels) {
            return false;
        }
        // A selector that allowed every channel loses some now that none does (Redis
        // 7.0.15 checks this first: the original then has no patterns to compare).
        selectors(self).iter().any(|s| {
            s.allchannels
                || s.channels
                    .iter()
                    .any(|c| !upcoming.iter().any(|u| u.channels.contains(c)))
        })
    }

    /// Whether `password` authenticates this user (enabled, and `nopass` or a password's hash).
    #[must_use]
    pub fn password_ok(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let hash = password_hash(password);
        // Compared without an early exit over the user's hashes.
        self.passwords.iter().fold(false, |found, p| {
            found | constant_time_eq(p.as_bytes(), hash.as_bytes())
        })
    }

    /// Applies one rule, as Redis 7.0's `ACLSetUser`.
    ///
    /// # Errors
    ///
    /// When Redis refuses the rule (see [`RuleError`]).
    pub fn apply(&mut self, op: &[u8]) -> Result<(), RuleError> {
        if op.is_empty() {
            return Ok(());
        }
        let is = |word: &str| op.eq_ignore_ascii_case(word.as_bytes());
        if is("on") {
            self.enabled = true;
        } else if is("off") {
            self.enabled = false;
        } else if is("skip-sanitize-payload") {
            self.sanitize = Sanitize::Skip;
        } else if is("sanitize-payload") {
            self.sanitize = Sanitize::Sanitize;
        } else if is("nopass") {
            self.nopass = true;
            self.passwords.clear();
        } else if is("resetpass") {
            self.nopass = false;
            self.passwords.clear();
        } else if op[0] == b'>' || op[0] == b'#' {
            let hash = if op[0] == b'>' {
                password_hash(&op[1..])
            } else {
                hex_hash(&op[1..])?
            };
            if !self.passwords.contains(&hash) {
                self.passwords.push(hash);
            }
            self.nopass = false;
        } else if op[0] == b'<' || op[0] == b'!' {
            let hash = if op[0] == b'<' {
                password_hash(&op[1..])
            } else {
                hex_hash(&op[1..])?
            };
            let before = self.passwords.len();
            self.passwords.retain(|p| *p != hash);
            if self.passwords.len() == before {
                return Err(RuleError::NoSuchPassword);
            }
        } else if op[0] == b'(' && op.len() > 1 && op[op.len() - 1] == b')' {
            let mut selector = Selector::new();
            for rule in op[1..op.len() - 1]
                .split(|b| b.is_ascii_whitespace())
                .filter(|r| !r.is_empty())
            {
                selector.apply(rule)?;
            }
            self.selectors.push(selector);
        } else if is("clearselectors") {
            self.selectors.clear();
        } else if is("reset") {
            self.nopass = false;
            self.passwords.clear();
            self.root.allkeys = false;
            self.root.keys.clear();
            self.root.allchannels = false;
            self.root.channels.clear();
            self.enabled = false;
            self.sanitize = Sanitize::Sanitize;
            self.selectors.clear();
            self.root.set_all_commands(false);
        } else {
            self.root.apply(op)?;
        }
        Ok(())
    }

    /// `ACL SETUSER`'s rules, all or none: Redis merges a selector written over several
    /// arguments (`(+get` `~k*)`), then applies the rules in order to a copy of the user.
    ///
    /// # Errors
    ///
    /// The first rule refused, or an unterminated selector; the user is then unchanged.
    pub fn apply_all<A: AsRef<[u8]>>(&mut self, ops: &[A]) -> Result<(), SetUserError> {
        let mut merged: Vec<Vec<u8>> = Vec::with_capacity(ops.len());
        let mut open: Option<(Vec<u8>, Vec<u8>)> = None;
        for op in ops {
            let op = op.as_ref();
            if op.first() == Some(&b'(') && op.last() != Some(&b')') {
                open = Some((op.to_vec(), op.to_vec()));
                continue;
            }
            if let Some((mut selector, start)) = open.take() {
                selector.push(b' ');
                selector.extend_from_slice(op);
                if op.last() == Some(&b')') {
                    merged.push(selector);
                } else {
                    open = Some((selector, start));
                }
                continue;
            }
            merged.push(op.to_vec());
        }
        if let Some((_, start)) = open {
            return Err(SetUserError::UnmatchedParen { op: start });
        }
        let mut next = self.clone();
        for op in merged {
            if let Err(why) = next.apply(&op) {
                return Err(SetUserError::Rule { op, why });
            }
        }
        *self = next;
        Ok(())
    }

    /// Redis 7.0's `ACLCheckAllUserCommandPerm`: allowed when a selector (the root first)
    /// allows the command, every key and every channel; else the most relevant refusal
    /// (a channel over a key over the command, the last argument among equals).
    ///
    /// # Errors
    ///
    /// Why the request is refused.
    pub fn check<A: ArgList + ?Sized>(&self, spec: &CommandSpec, args: &A) -> Result<(), Denied> {
        let needs_keys = |s: &Selector| !s.allkeys;
        let keys = if needs_keys(&self.root) || self.selectors.iter().any(needs_keys) {
            key_refs(spec, args)
        } else {
            KeyRefs::new()
        };
        let mut worst = Denied::Command;
        for selector in std::iter::once(&self.root).chain(&self.selectors) {
            match selector.check(spec, args, &keys) {
                Ok(()) => return Ok(()),
                Err(denied) => {
                    if denied.rank() > worst.rank() {
                        worst = denied;
                    }
                }
            }
        }
        Err(worst)
    }
}

/// An option of `SORT` / `SORT_RO` that Redis refuses to a user without access to every key
/// ([`User::sort_option_denied`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortOption {
    /// `BY` with a pattern (one with a `*`): it reads the keys the pattern forms.
    By,
    /// `GET` (any pattern, `#` included).
    Get,
}

impl User {
    /// Redis 7.0's `ACLUserCheckCmdWithUnrestrictedKeyAccess(user, cmd, CMD_KEY_ACCESS)`,
    /// what `sortCommandGeneric` calls `user_has_full_key_access`: some selector allows the
    /// request and may read every key (`allkeys`, or the pattern `*` itself with read
    /// permission).
    #[must_use]
    pub fn has_full_key_access<A: ArgList + ?Sized>(&self, spec: &CommandSpec, args: &A) -> bool {
        let keys = key_refs(spec, args);
        std::iter::once(&self.root).chain(&self.selectors).any(|s| {
            (s.allkeys || s.keys.iter().any(|k| k.read && k.pattern == b"*"))
                && s.check(spec, args, &keys).is_ok()
        })
    }

    /// The `BY` or `GET` option of a `SORT` / `SORT_RO` request that Redis refuses this user:
    /// they read keys formed from a pattern, which the key check never sees, so without
    /// [full key access](Self::has_full_key_access) Redis answers `ERR BY|GET option of SORT denied ...`. Options are
    /// read left to right as `sortCommandGeneric` does; at the first one it would refuse for
    /// another reason (a syntax error, a `LIMIT` that is not an integer) this stops, and the
    /// command fails on its own.
    #[must_use]
    pub fn sort_option_denied<A: ArgList + ?Sized>(
        &self,
        spec: &CommandSpec,
        args: &A,
    ) -> Option<SortOption> {
        if !matches!(spec.id, CommandId::Sort | CommandId::SortRo)
            || self.has_full_key_access(spec, args)
        {
            return None;
        }
        let mut j = 2;
        while j < args.len() {
            let left = args.len() - j - 1;
            let arg = args.arg(j);
            let is = |word: &str| arg.eq_ignore_ascii_case(word.as_bytes());
            if is("asc") || is("desc") || is("alpha") {
                j += 1;
                continue;
            }
            if is("limit") && left >= 2 {
                let int = |a: &[u8]| crate::resp::parse_i64(a).is_some();
                if !int(args.arg(j + 1)) || !int(args.arg(j + 2)) {
                    return None;
                }
                j += 2;
            } else if is("store") && left >= 1 && spec.id == CommandId::Sort {
                j += 1;
            } else if is("by") && left >= 1 {
                if args.arg(j + 1).contains(&b'*') {
                    return Some(SortOption::By);
                }
                j += 1;
            } else if is("get") && left >= 1 {
                return Some(SortOption::Get);
            } else {
                return None;
            }
            j += 1;
        }
        None
    }
}

/// A `#hash` / `!hash` argument: exactly 64 lowercase hex digits.
fn hex_hash(hex: &[u8]) -> Result<String, RuleError> {
    if hex.len() != 64 || !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(RuleError::BadHash);
    }
    Ok(String::from_utf8_lossy(hex).into_owned())
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The names of a category's commands, as `ACL CAT category` lists them (subcommands as
/// `container|sub`).
pub fn category_commands(cat: AclCategories) -> impl Iterator<Item = &'static str> {
    acl_specs()
        .filter(move |s| s.acl.intersects(cat))
        .map(|s| s.name)
}

/// What `ACL DRYRUN` answers for a refused request (Redis 7.0.15's texts).
#[must_use]
pub fn dryrun_text<A: ArgList + ?Sized>(denied: Denied, spec: &CommandSpec, args: &A) -> Vec<u8> {
    let (what, object, kind): (&str, &[u8], &str) = match denied {
        Denied::Command => ("run", spec.name.as_bytes(), "command"),
        Denied::Key(at) => ("access", args.arg(at), "key"),
        Denied::Channel(at) => ("access", args.arg(at), "channel"),
    };
    let mut out = format!("This user has no permissions to {what} the '").into_bytes();
    out.extend_from_slice(object);
    out.extend_from_slice(format!("' {kind}").as_bytes());
    out
}
