//! The ACL users the proxy creates on every node for its client traffic (`[backend]
//! manage_acl`, on by default).
//!
//! The proxy checks every command a client sends against `allow_flush` and the client's
//! access level, but a Lua script or function runs its `redis.call()`s on the node, where
//! the proxy cannot see them. Redis checks those calls against the ACL user of the
//! connection that runs the script. So the lanes do not carry client traffic as the
//! configured backend user (often `default`, which may do anything): every new connection
//! first creates (or resets) the proxy's own users with `ACL SETUSER`, over its configured
//! credentials, then switches to `redshard-client` with `AUTH`. A script of a `read-only` or
//! `no-dangerous` client is preceded on its lane by an `AUTH` as `redshard-readonly` or
//! `redshard-nodanger` (and the next request of another client by one back), the way a
//! request in the other protocol is preceded by `HELLO`.
//!
//! Creating the users on every new connection, instead of once from the controller, covers
//! every node the same way: those present at start, those added later, a node that restarted
//! (and forgot its users) and one that comes back after a failover. `ACL SETUSER` with the
//! same rules is idempotent, so lanes connecting at once do not disturb each other.
//!
//! The passwords are derived from the configured backend credentials: every proxy with the
//! same configuration computes the same ones, so several proxies (and a restarted one) agree
//! on them without storing anything, and nobody who does not already hold the backend
//! credentials can compute them. They are not secrets beyond those credentials: on a node
//! whose `default` user has no password anyone may already do everything.

use bytes::{Bytes, BytesMut};
use redshard_config::{Access, Config, KeylessScripts};

use redshard_protocol::command::{self, Route};
use redshard_protocol::resp::encode;

/// The backend user a request runs as (with managed ACL users).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendUser {
    /// `redshard-client`: everything redshard lets a client run.
    #[default]
    Client,
    /// `redshard-readonly`: what a `read-only` client's script may call.
    ReadOnly,
    /// `redshard-nodanger`: what a `no-dangerous` client's script may call.
    NoDangerous,
    /// `redshard-client-nokeys`: a script or function called with no key, of a client of
    /// full access (`[backend] keyless_scripts = "no-keys"`): it may touch no key.
    ClientNoKeys,
    /// `redshard-readonly-nokeys`: the same for a `read-only` client.
    ReadOnlyNoKeys,
    /// `redshard-nodanger-nokeys`: the same for a `no-dangerous` client.
    NoDangerousNoKeys,
    /// `redshard-mover`: `redshard-client`'s rights and `MIGRATE`, which moves a key of a
    /// migrating slot in a fleet (`[cluster]`); no client request runs as it.
    Mover,
}

/// How many [`BackendUser`]s there are.
const USERS: usize = 7;

impl BackendUser {
    /// The user whose rights match a client's access level.
    #[must_use]
    pub fn of(access: Access) -> Self {
        match access {
            Access::All => Self::Client,
            Access::ReadOnly => Self::ReadOnly,
            Access::NoDangerous => Self::NoDangerous,
        }
    }

    /// The same level's user that may access no key (for a script called with none).
    #[must_use]
    pub fn without_keys(self) -> Self {
        match self {
            Self::Client | Self::ClientNoKeys | Self::Mover => Self::ClientNoKeys,
            Self::ReadOnly | Self::ReadOnlyNoKeys => Self::ReadOnlyNoKeys,
            Self::NoDangerous | Self::NoDangerousNoKeys => Self::NoDangerousNoKeys,
        }
    }

    /// The level's user with access to every key.
    fn with_keys(self) -> Self {
        match self {
            Self::Client | Self::ClientNoKeys | Self::Mover => Self::Client,
            Self::ReadOnly | Self::ReadOnlyNoKeys => Self::ReadOnly,
            Self::NoDangerous | Self::NoDangerousNoKeys => Self::NoDangerous,
        }
    }

    /// Whether it may access keys.
    #[must_use]
    pub fn has_keys(self) -> bool {
        self == self.with_keys() || self == Self::Mover
    }

    /// Whether it may run `WAIT` (the lanes' group commit): not a read-only level.
    #[must_use]
    pub fn may_wait(self) -> bool {
        self.with_keys() != Self::ReadOnly
    }

    /// The user's name on the nodes.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Client => "redshard-client",
            Self::ReadOnly => "redshard-readonly",
            Self::NoDangerous => "redshard-nodanger",
            Self::ClientNoKeys => "redshard-client-nokeys",
            Self::ReadOnlyNoKeys => "redshard-readonly-nokeys",
            Self::NoDangerousNoKeys => "redshard-nodanger-nokeys",
            Self::Mover => "redshard-mover",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Client => 0,
            Self::ReadOnly => 1,
            Self::NoDangerous => 2,
            Self::ClientNoKeys => 3,
            Self::ReadOnlyNoKeys => 4,
            Self::NoDangerousNoKeys => 5,
            Self::Mover => 6,
        }
    }
}

/// The commands no client may run through redshard (`Route::Forbidden`) as ACL rules: a
/// container (`CLIENT`, `CONFIG` ...) is skipped, since only some of its subcommands are
/// forbidden and those are listed on their own.
fn forbidden_rules() -> impl Iterator<Item = String> {
    command::all_specs()
        .filter(|spec| spec.route == Route::Forbidden && !spec.has_subcommands())
        .map(|spec| format!("-{}", spec.name))
}

/// The ACL rules of `user` (after `reset on >password`), for a proxy whose `allow_flush` is
/// `allow_flush`. `docs/access-control.md` explains them.
#[must_use]
pub fn rules(user: BackendUser, allow_flush: bool) -> Vec<String> {
    // A user without keys gets no key pattern (`reset` left it none): Redis then refuses
    // every key a script of it touches.
    let mut rules: Vec<String> = if user.has_keys() {
        vec!["~*".into(), "&*".into()]
    } else {
        vec!["&*".into()]
    };
    match user.with_keys() {
        BackendUser::Client | BackendUser::NoDangerous => rules.push("+@all".into()),
        // A read-only client runs only EVAL_RO, EVALSHA_RO and FCALL_RO (the proxy refuses
        // the others), alone or in a transaction, and Redis already refuses writes inside
        // them; what is left to refuse is what is not a read.
        _ => rules.extend(
            [
                "-@all",
                "+@read",
                "+eval_ro",
                "+evalsha_ro",
                "+fcall_ro",
                "+multi",
                "+exec",
                "+ping",
                "+echo",
                // The lane's own switch to the client's database.
                "+select",
            ]
            .map(String::from),
        ),
    }
    if user.with_keys() != BackendUser::Client {
        rules.extend(["-@dangerous", "-@admin"].map(String::from));
    }
    rules.extend(forbidden_rules());
    // The proxy answers these itself (SCRIPT/FUNCTION KILL, CONFIG SET/RESETSTAT/REWRITE
    // and LATENCY RESET sent on control connections only; CLIENT KILL/PAUSE/UNPAUSE/
    // UNBLOCK/REPLY and MONITOR act on the proxy's own clients; the ACL users listed are the
    // proxy's): a client's request never carries them to a node, whose connections are the
    // proxy's, and a script must not run them on one node.
    rules.extend(
        [
            "-script|kill",
            "-function|kill",
            "-client|kill",
            "-client|pause",
            "-client|unpause",
            "-client|unblock",
            "-client|reply",
            "-client|getredir",
            "-client|trackinginfo",
            "-config|set",
            "-config|resetstat",
            "-config|rewrite",
            "-latency|reset",
            "-monitor",
            "-acl|whoami",
            "-acl|users",
            "-acl|list",
            "-acl|getuser",
        ]
        .map(String::from),
    );
    if !allow_flush {
        rules.extend(["-flushall", "-flushdb"].map(String::from));
    }
    if user == BackendUser::Mover {
        // Last, so it wins over the forbidden commands' `-migrate`.
        rules.push("+migrate".into());
    }
    rules
}

/// The proxy's ACL users for one configuration: what a new connection sends to create them,
/// and the `AUTH` that switches a connection to each.
#[derive(Debug)]
pub struct ManagedUsers {
    /// One `ACL SETUSER` request per user the configuration needs.
    setup: Vec<Bytes>,
    /// `AUTH name password` per [`BackendUser`]; `None` for a level no `[[user]]` has (its
    /// requests never occur; they would run as `redshard-client`).
    auth: [Option<Bytes>; USERS],
}

impl ManagedUsers {
    /// The users `config` needs: `redshard-client` always, the others only when a `[[user]]`
    /// has their level; each with its no-keys twin under `keyless_scripts = "no-keys"`;
    /// `redshard-mover` in a fleet (`[cluster]`), whose key moves use `MIGRATE`.
    /// `None` with `[backend] manage_acl = false`.
    #[must_use]
    pub fn new(config: &Config) -> Option<Self> {
        if !config.backend.manage_acl {
            return None;
        }
        let mut levels = vec![BackendUser::Client];
        for user in [BackendUser::ReadOnly, BackendUser::NoDangerous] {
            if config
                .users
                .iter()
                .any(|u| BackendUser::of(u.access) == user)
            {
                levels.push(user);
            }
        }
        let mut users = levels.clone();
        if config.backend.keyless_scripts == KeylessScripts::NoKeys {
            users.extend(levels.iter().map(|level| level.without_keys()));
        }
        if config.cluster.is_some() {
            users.push(BackendUser::Mover);
        }
        let mut setup = Vec::with_capacity(users.len());
        let mut auth: [Option<Bytes>; USERS] = Default::default();
        for user in users {
            let password = password(config, user);
            let mut args: Vec<String> = vec![
                "ACL".into(),
                "SETUSER".into(),
                user.name().into(),
                "reset".into(),
                "on".into(),
                format!(">{password}"),
            ];
            args.extend(rules(user, config.allow_flush));
            let args: Vec<&[u8]> = args.iter().map(String::as_bytes).collect();
            let mut out = BytesMut::new();
            encode::request(&mut out, &args);
            setup.push(out.freeze());
            let mut out = BytesMut::new();
            encode::request(
                &mut out,
                &[b"AUTH", user.name().as_bytes(), password.as_bytes()],
            );
            auth[user.index()] = Some(out.freeze());
        }
        Some(Self { setup, auth })
    }

    /// The `ACL SETUSER` requests, in order.
    #[must_use]
    pub fn setup(&self) -> &[Bytes] {
        &self.setup
    }

    /// The `AUTH` request that makes a connection run as `user` (as `redshard-client` for a
    /// level no `[[user]]` has).
    #[must_use]
    pub fn auth(&self, user: BackendUser) -> &Bytes {
        match &self.auth[user.index()] {
            Some(auth) => auth,
            None => self.auth[0]
                .as_ref()
                .unwrap_or_else(|| unreachable!("client user")),
        }
    }
}

/// The password of `user`: SHA-1 of the backend credentials and the user's name, in hex.
fn password(config: &Config, user: BackendUser) -> String {
    let backend = &config.backend;
    let mut material = Vec::with_capacity(128);
    for part in [
        Some("redshard managed ACL user"),
        Some(user.name()),
        backend.username.as_deref(),
        backend.password.as_deref(),
        backend.control_username.as_deref(),
        backend.control_password.as_deref(),
    ] {
        material.extend_from_slice(part.unwrap_or("").as_bytes());
        material.push(0);
    }
    sha1_smol::Sha1::from(&material).digest().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_deny_what_redshard_refuses() {
        let client = rules(BackendUser::Client, false);
        for rule in [
            "+@all",
            "-flushall",
            "-flushdb",
            "-swapdb",
            "-migrate",
            "-script|kill",
            "-client|kill",
            "-config|set",
        ] {
            assert!(client.iter().any(|r| r == rule), "{rule} in {client:?}");
        }
        // Containers are not denied whole: CLIENT SETNAME, SCRIPT LOAD ... stay allowed; and
        // SELECT and MOVE are, since the lanes switch databases for the clients.
        for rule in [
            "-client",
            "-script",
            "-function",
            "-config",
            "-memory",
            "-select",
            "-move",
        ] {
            assert!(!client.iter().any(|r| r == rule), "{rule}");
        }
        assert!(!rules(BackendUser::Client, true)
            .iter()
            .any(|r| r == "-flushall"));
        let nodanger = rules(BackendUser::NoDangerous, true);
        assert!(nodanger.iter().any(|r| r == "-@dangerous"));
        let readonly = rules(BackendUser::ReadOnly, true);
        assert_eq!(readonly[2..4], ["-@all".to_owned(), "+@read".to_owned()]);
        assert!(readonly.iter().any(|r| r == "-@admin"));
        assert!(readonly.iter().any(|r| r == "+select"));
        // The users of keyless scripts: the same rights, and no key pattern at all.
        for user in [
            BackendUser::Client,
            BackendUser::ReadOnly,
            BackendUser::NoDangerous,
        ] {
            let with = rules(user, false);
            let without = rules(user.without_keys(), false);
            assert_eq!(with[0], "~*");
            assert_eq!(with[1..], without[..], "{user:?}");
            assert!(!without.iter().any(|r| r.starts_with('~') || r == "allkeys"));
        }
    }

    #[test]
    fn users_exist_only_for_configured_levels() {
        let mut config = Config::default();
        config.backend.keyless_scripts = KeylessScripts::AnyMaster;
        let users = ManagedUsers::new(&config).unwrap();
        assert_eq!(users.setup().len(), 1);
        assert_eq!(
            users.auth(BackendUser::ReadOnly),
            users.auth(BackendUser::Client)
        );
        // Keyless scripts touch no key by default: each level gets a twin without keys.
        config.backend.keyless_scripts = KeylessScripts::NoKeys;
        assert_eq!(ManagedUsers::new(&config).unwrap().setup().len(), 2);
        config.users.push(redshard_config::UserConfig {
            name: "r".into(),
            password: "p".into(),
            access: Access::ReadOnly,
        });
        let users = ManagedUsers::new(&config).unwrap();
        assert_eq!(users.setup().len(), 4);
        assert_ne!(
            users.auth(BackendUser::ReadOnly),
            users.auth(BackendUser::Client)
        );
        assert_ne!(
            users.auth(BackendUser::ReadOnlyNoKeys),
            users.auth(BackendUser::ReadOnly)
        );
        // Another proxy with the same configuration computes the same passwords.
        assert_eq!(
            ManagedUsers::new(&config)
                .unwrap()
                .auth(BackendUser::ReadOnly),
            users.auth(BackendUser::ReadOnly)
        );
        config.backend.manage_acl = false;
        assert!(ManagedUsers::new(&config).is_none());
    }

    #[test]
    fn the_mover_exists_in_a_fleet_only_and_may_migrate() {
        let mover = rules(BackendUser::Mover, false);
        let client = rules(BackendUser::Client, false);
        assert_eq!(mover[..client.len()], client[..], "the client's rights");
        assert_eq!(mover.last().map(String::as_str), Some("+migrate"));
        assert!(client.iter().any(|r| r == "-migrate"));
        let mut config = Config::default();
        config.backend.keyless_scripts = KeylessScripts::AnyMaster;
        let alone = ManagedUsers::new(&config).unwrap();
        assert_eq!(alone.setup().len(), 1);
        assert_eq!(
            alone.auth(BackendUser::Mover),
            alone.auth(BackendUser::Client)
        );
        config.cluster = Some(
            redshard_config::Config::from_toml_str(
                "[[shard]]\nname = \"s1\"\nmaster = \"127.0.0.1:1\"\nslots = [\"0-16383\"]\n[cluster]\netcd = [\"127.0.0.1:2379\"]\n",
                "test",
            )
            .unwrap()
            .cluster
            .unwrap(),
        );
        let fleet = ManagedUsers::new(&config).unwrap();
        assert_eq!(fleet.setup().len(), 2);
        assert!(String::from_utf8_lossy(&fleet.setup()[1]).contains("redshard-mover"));
        assert_ne!(
            fleet.auth(BackendUser::Mover),
            fleet.auth(BackendUser::Client)
        );
    }
}
