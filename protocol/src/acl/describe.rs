//! A user as `ACL LIST` and `ACL GETUSER` describe it (Redis 7.0.15's `ACLDescribeUser`,
//! `ACLDescribeSelector`, `ACLDescribeSelectorCommandRules`).

use super::{acl_specs, KeyPattern, Sanitize, Selector, User};
use crate::command::{self, AclCategories, CommandSpec};

/// The command rules of a selector as Redis 7.0 rebuilds them from its bits: `+@all` or
/// `-@all`, then categories chosen greedily (the one with the fewest exceptions first),
/// then the single commands still different, each followed by its subcommands and by its
/// first-argument rules (`+select|0`) when not otherwise allowed.
#[must_use]
pub fn describe_commands(selector: &Selector) -> String {
    let additive = !selector.future;
    let mut rules = String::from(if additive { "-@all " } else { "+@all " });
    // The rules written so far, applied: what is still to be said is where it differs.
    let mut fake = Selector::new();
    fake.set_all_commands(!additive);
    // The user's bits with each category written so far taken back out, for the counts.
    let mut temp = Selector::new();
    temp.allowed = selector.allowed;
    // Greedily, the category that says the most with the fewest exceptions, until none
    // says more than it gets wrong (Redis 7.0's loop; ties go to the first in `ACL CAT`).
    let mut applied = [false; 32];
    loop {
        let mut best: Option<(usize, usize, usize)> = None;
        for (j, &(cat, _)) in AclCategories::ALL.iter().enumerate() {
            if applied[j] {
                continue;
            }
            let (mut on, mut off) = (0usize, 0usize);
            for spec in acl_specs().filter(|s| s.acl.intersects(cat)) {
                if temp.allowed.get(spec.id) {
                    on += 1;
                } else {
                    off += 1;
                }
            }
            let (diff, same) = if additive { (off, on) } else { (on, off) };
            let better = best.is_none_or(|(_, mindiff, maxsame)| {
                diff < mindiff || (diff == mindiff && same > maxsame)
            });
            if same > diff && better {
                best = Some((j, diff, same));
            }
        }
        let Some((j, _, _)) = best else { break };
        let (cat, name) = AclCategories::ALL[j];
        fake.change_category(cat, additive);
        temp.change_category(cat, !additive);
        rules.push_str(if additive { "+@" } else { "-@" });
        rules.push_str(name);
        rules.push(' ');
        applied[j] = true;
    }
    for spec in command::commands() {
        single(selector, &mut fake, spec, &mut rules);
    }
    rules.pop();
    rules
}

/// The rule for one command where the selector and the rules so far differ.
fn single(selector: &Selector, fake: &mut Selector, spec: &CommandSpec, rules: &mut String) {
    let on = selector.allowed.get(spec.id);
    if on != fake.allowed.get(spec.id) {
        rules.push(if on { '+' } else { '-' });
        rules.push_str(spec.name);
        rules.push(' ');
        fake.change_perm(spec, on);
    }
    for sub in command::acl_subcommands(spec) {
        single(selector, fake, sub, rules);
    }
    if on {
        return;
    }
    if let Some((_, firsts)) = selector.firstargs.iter().find(|(id, _)| *id == spec.id) {
        for first in firsts {
            rules.push('+');
            rules.push_str(spec.name);
            rules.push('|');
            rules.push_str(&String::from_utf8_lossy(first));
            rules.push(' ');
        }
    }
}

/// A key pattern as a rule: `~p`, `%R~p`, `%W~p`.
fn push_pattern(out: &mut Vec<u8>, key: &KeyPattern) {
    match (key.read, key.write) {
        (true, false) => out.extend_from_slice(b"%R~"),
        (false, true) => out.extend_from_slice(b"%W~"),
        _ => out.push(b'~'),
    }
    out.extend_from_slice(&key.pattern);
}

impl Selector {
    /// The key patterns as `ACL GETUSER` shows them (`~*`, or the patterns, space-separated).
    #[must_use]
    pub fn keys_rules(&self) -> Vec<u8> {
        if self.allkeys {
            return b"~*".to_vec();
        }
        let mut out = Vec::new();
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            push_pattern(&mut out, key);
        }
        out
    }

    /// The channel patterns as `ACL GETUSER` shows them (`&*`, or `&p` space-separated).
    #[must_use]
    pub fn channels_rules(&self) -> Vec<u8> {
        if self.allchannels {
            return b"&*".to_vec();
        }
        let mut out = Vec::new();
        for (i, channel) in self.channels.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.push(b'&');
            out.extend_from_slice(channel);
        }
        out
    }

    /// Redis's `ACLDescribeSelector`: keys, channels (`resetchannels` first when not all),
    /// commands.
    fn describe(&self, out: &mut Vec<u8>) {
        if self.allkeys {
            out.extend_from_slice(b"~* ");
        } else {
            for key in &self.keys {
                push_pattern(out, key);
                out.push(b' ');
            }
        }
        if self.allchannels {
            out.extend_from_slice(b"&* ");
        } else {
            out.extend_from_slice(b"resetchannels ");
            for channel in &self.channels {
                out.push(b'&');
                out.extend_from_slice(channel);
                out.push(b' ');
            }
        }
        out.extend_from_slice(describe_commands(self).as_bytes());
    }
}

impl User {
    /// The flags as `ACL GETUSER` lists them.
    #[must_use]
    pub fn flags(&self) -> Vec<&'static str> {
        let mut flags = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            flags.push("nopass");
        }
        match self.sanitize {
            Sanitize::Unset => {}
            Sanitize::Skip => flags.push("skip-sanitize-payload"),
            Sanitize::Sanitize => flags.push("sanitize-payload"),
        }
        flags
    }
}

/// The user's `ACL LIST` line: `user name on #hash ~keys resetchannels &ch -@all +get (...)`.
#[must_use]
pub fn describe_user(user: &User) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"user ");
    out.extend_from_slice(user.name.as_bytes());
    out.push(b' ');
    for flag in user.flags() {
        out.extend_from_slice(flag.as_bytes());
        out.push(b' ');
    }
    for hash in &user.passwords {
        out.push(b'#');
        out.extend_from_slice(hash.as_bytes());
        out.push(b' ');
    }
    user.root.describe(&mut out);
    for selector in &user.selectors {
        out.extend_from_slice(b" (");
        selector.describe(&mut out);
        out.push(b')');
    }
    out
}
