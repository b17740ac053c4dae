//! The rules against what redis-server 7.0.15 answered to the same `ACL SETUSER` (the
//! integration test `acl_rules` compares with a live server as well).

use super::*;
use crate::command::lookup_fullname;

fn user(rules: &[&str]) -> Result<User, SetUserError> {
    let mut u = User::new("u");
    u.apply_all(rules).map(|()| u)
}

fn line(rules: &[&str]) -> String {
    String::from_utf8(describe_user(&user(rules).unwrap())).unwrap()
}

fn refused(rules: &[&str]) -> RuleError {
    match user(rules) {
        Err(SetUserError::Rule { why, .. }) => why,
        other => panic!("{rules:?}: {other:?}"),
    }
}

#[test]
fn every_command_has_a_bit() {
    for spec in command::every_spec() {
        assert!((spec.id as usize) < WORDS * 64, "{}", spec.name);
    }
}

#[test]
fn descriptions_match_redis() {
    assert_eq!(line(&[]), "user u off resetchannels -@all");
    assert_eq!(
        describe_user(&User::default_user()),
        b"user default on nopass ~* &* +@all"
    );
    assert_eq!(
        line(&["reset", ">pw", "+get", "+@hash", "-hset", "+config|get", "-@all", "+set", "+select|0", "%R~a*", "~b*", "%W~a*", "&ch*", "(+get ~x*)"]),
        "user u off sanitize-payload #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 ~a* ~b* resetchannels &ch* -@all +select|0 +set (~x* resetchannels -@all +get)"
    );
    assert_eq!(
        line(&[
            "+@hash",
            "-@hash",
            "+get",
            "-get",
            "+config",
            "-config|get",
            "+client|id",
            "+@admin"
        ]),
        "user u off resetchannels -@all +@admin +client|id +config"
    );
    assert_eq!(
        line(&["%R~*", "%W~*", "~b"]),
        "user u off ~* ~b resetchannels -@all"
    );
    assert_eq!(line(&["&a", "&a", "&*"]), "user u off &* -@all");
    assert_eq!(
        line(&[
            "+@all",
            "+get",
            "allcommands",
            "-@dangerous",
            "+select|0",
            "-select",
            "+select|1",
            "+select|0"
        ]),
        "user u off resetchannels +@all -@dangerous -select +select|1 +select|0"
    );
    assert_eq!(line(&["nopass", ">x"]), "user u off #2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881 resetchannels -@all");
    assert_eq!(
        line(&[">x", "nopass"]),
        "user u off nopass resetchannels -@all"
    );
    assert_eq!(
        line(&["(~a +get)", "(&x)", "clearselectors", "( +set  ~b )"]),
        "user u off resetchannels -@all (~b resetchannels -@all +set)"
    );
    assert_eq!(
        line(&["(+get", "~a)"]),
        "user u off resetchannels -@all (~a resetchannels -@all +get)"
    );
    assert_eq!(
        line(&["()"]),
        "user u off resetchannels -@all (resetchannels -@all)"
    );
    assert_eq!(line(&["%R"]), "user u off %R~ resetchannels -@all");
    assert_eq!(
        line(&[
            "+select|0",
            "+get|x",
            "+config|get",
            "+@all",
            "+config",
            "-config|set"
        ]),
        "user u off resetchannels +@all -config|set"
    );
    assert_eq!(
        line(&["+select", "+select|0"]),
        "user u off resetchannels -@all +select"
    );
    assert_eq!(
        line(&["+@ALL", "-GET", "+Config|Get", "~A", "&B"]),
        "user u off ~A resetchannels &B +@all -get"
    );
}

#[test]
fn categories_are_chosen_as_redis_does() {
    for (rules, commands) in [
        ("+@all -@admin", "+@all -@admin"),
        ("+@all -@dangerous", "+@all -@dangerous"),
        ("-@all +@read +@write", "-@all +@write +@read"),
        ("-@all +@hash +get +@set -@set", "-@all +@hash +get"),
        ("+@all -get -@string", "+@all -@string"),
        ("-@all +get +set -@all +get", "-@all +get"),
    ] {
        let rules: Vec<&str> = rules.split(' ').collect();
        assert_eq!(describe_commands(&user(&rules).unwrap().root), commands);
    }
    // The categories of `-@all +@read -@string` are Redis's (its single rules come in
    // another order there, see the module's documentation).
    let described = describe_commands(&user(&["+@read", "-@string"]).unwrap().root);
    assert!(
        described.starts_with("-@all +@bitmap +@geo +@hash +@set +@sortedset -"),
        "{described}"
    );
}

#[test]
fn refusals_match_redis() {
    assert_eq!(refused(&["~*", "~a"]), RuleError::KeyAfterAllKeys);
    assert_eq!(refused(&["foo"]), RuleError::Syntax);
    assert_eq!(refused(&["+foo"]), RuleError::UnknownName);
    assert_eq!(refused(&["+@foo"]), RuleError::UnknownName);
    assert_eq!(refused(&["#abc"]), RuleError::BadHash);
    assert_eq!(refused(&["<nope"]), RuleError::NoSuchPassword);
    assert_eq!(refused(&["+get|x|y"]), RuleError::UnknownName);
    assert_eq!(refused(&["+config|"]), RuleError::Syntax);
    assert_eq!(refused(&["+config|nope"]), RuleError::UnknownName);
    assert_eq!(refused(&["+config|get|x"]), RuleError::SubcommandFirstArg);
    assert_eq!(refused(&["-select|0"]), RuleError::UnknownName);
    assert_eq!(refused(&["%X~a"]), RuleError::Syntax);
    assert_eq!(refused(&["%~a"]), RuleError::Syntax);
    assert_eq!(refused(&["%RR~a"]), RuleError::Syntax);
    assert_eq!(
        refused(&["&a", "allchannels", "&b"]),
        RuleError::ChannelAfterAllChannels
    );
    assert_eq!(refused(&["(nope)"]), RuleError::Syntax);
    assert_eq!(refused(&["x)"]), RuleError::Syntax);
    assert_eq!(
        user(&["(+get"]),
        Err(SetUserError::UnmatchedParen {
            op: b"(+get".to_vec()
        })
    );
    // All or nothing.
    let mut u = User::new("u");
    assert!(u.apply_all(&["on", "+get", "nope"]).is_err());
    assert_eq!(u, User::new("u"));
}

fn check(u: &User, args: &[&str]) -> Result<(), Denied> {
    let spec = command::resolve(args).unwrap();
    u.check(spec, args)
}

#[test]
fn checks_commands_keys_and_channels() {
    let u = user(&[
        "+get",
        "+set",
        "+config|get",
        "+select|0",
        "%R~r*",
        "~rw*",
        "%W~w*",
        "&news.*",
        "+subscribe",
        "+psubscribe",
        "+publish",
        "+bitfield",
        "+auth",
    ])
    .unwrap();
    assert_eq!(check(&u, &["get", "r1"]), Ok(()));
    assert_eq!(check(&u, &["set", "r1", "v"]), Err(Denied::Key(1)));
    assert_eq!(check(&u, &["set", "w1", "v"]), Ok(()));
    assert_eq!(check(&u, &["set", "w1", "v", "GET"]), Err(Denied::Key(1)));
    assert_eq!(check(&u, &["set", "rw1", "v", "GET"]), Ok(()));
    assert_eq!(check(&u, &["bitfield", "r1", "GET", "u8", "0"]), Ok(()));
    assert_eq!(
        check(&u, &["bitfield", "r1", "SET", "u8", "0", "1"]),
        Err(Denied::Key(1))
    );
    assert_eq!(check(&u, &["get", "x"]), Err(Denied::Key(1)));
    assert_eq!(check(&u, &["hget", "r1", "f"]), Err(Denied::Command));
    assert_eq!(check(&u, &["config", "get", "x"]), Ok(()));
    assert_eq!(
        check(&u, &["config", "set", "x", "y"]),
        Err(Denied::Command)
    );
    assert_eq!(check(&u, &["select", "0"]), Ok(()));
    assert_eq!(check(&u, &["select", "1"]), Err(Denied::Command));
    assert_eq!(
        check(&u, &["subscribe", "news.a", "sport"]),
        Err(Denied::Channel(2))
    );
    assert_eq!(check(&u, &["publish", "news.a", "x"]), Ok(()));
    assert_eq!(check(&u, &["psubscribe", "news.*"]), Ok(()));
    assert_eq!(
        check(&u, &["psubscribe", "news.a*"]),
        Err(Denied::Channel(1))
    );
    // AUTH needs no permission (no-auth).
    assert_eq!(check(&u, &["auth", "x"]), Ok(()));
    // A selector may allow what the root does not.
    let s = user(&["+get", "~a*", "(+set ~b*)"]).unwrap();
    assert_eq!(check(&s, &["set", "b1", "v"]), Ok(()));
    assert_eq!(check(&s, &["get", "b1"]), Err(Denied::Key(1)));
    assert!(User::default_user().allows_everything());
    assert!(!u.allows_everything());
}

#[test]
fn passwords() {
    let u = user(&["on", ">a", ">b", ">a"]).unwrap();
    assert_eq!(u.passwords.len(), 2);
    assert!(u.password_ok(b"b"));
    assert!(!u.password_ok(b"c"));
    let off = user(&[">a"]).unwrap();
    assert!(!off.password_ok(b"a"));
    assert!(user(&["on", "nopass"]).unwrap().password_ok(b"anything"));
    assert!(lookup_fullname(b"CLIENT|SETINFO").is_some());
}

#[test]
fn categories_are_redis_s() {
    let read: Vec<_> = category_commands(AclCategories::READ).collect();
    assert!(read.contains(&"get"));
    assert!(!read.contains(&"set"));
    assert_eq!(category(b"Dangerous"), Some(AclCategories::DANGEROUS));
}

/// What redis-server 7.0.15 answered to these SORTs (`ERR BY|GET option of SORT denied`).
#[test]
fn sort_patterns_need_access_to_every_key() {
    let sort = lookup_fullname(b"sort").unwrap();
    let sort_ro = lookup_fullname(b"sort_ro").unwrap();
    let narrow = user(&["on", "~k*", "+@all"]).unwrap();
    let denied = |u: &User, spec, args: &[&str]| u.sort_option_denied(spec, args);
    assert_eq!(
        denied(&narrow, sort, &["sort", "k", "GET", "#"]),
        Some(SortOption::Get)
    );
    assert_eq!(
        denied(&narrow, sort, &["sort", "k", "BY", "w_*"]),
        Some(SortOption::By)
    );
    assert_eq!(
        denied(
            &narrow,
            sort_ro,
            &["sort_ro", "k", "BY", "nosort", "GET", "s_*"]
        ),
        Some(SortOption::Get)
    );
    assert_eq!(denied(&narrow, sort, &["sort", "k", "BY", "nosort"]), None);
    assert_eq!(
        denied(
            &narrow,
            sort,
            &["sort", "k", "LIMIT", "0", "1", "DESC", "ALPHA", "STORE", "k2"]
        ),
        None
    );
    // Another error comes first: the command fails on its own.
    assert_eq!(denied(&narrow, sort, &["sort", "k", "GET"]), None);
    assert_eq!(
        denied(&narrow, sort, &["sort", "k", "LIMIT", "x", "1", "GET", "#"]),
        None
    );
    assert_eq!(
        denied(
            &narrow,
            sort_ro,
            &["sort_ro", "k", "STORE", "d", "GET", "#"]
        ),
        None
    );
    // A selector that allows the request and reads every key is needed; writing every key,
    // a pattern matching `*` other than `*` itself, or a selector without SORT is not enough.
    for rules in [
        &["~*", "+@all"][..],
        &["%R~*", "+@all"],
        &["~k*", "+@all", "(~* +sort)"],
    ] {
        let u = user(rules).unwrap();
        assert_eq!(
            denied(&u, sort, &["sort", "k", "GET", "s_*"]),
            None,
            "{rules:?}"
        );
    }
    for rules in [
        &["%W~*", "~k*", "+@all"][..],
        &["~k*", "~**", "+@all"],
        &["~k*", "+@all", "(~* +get)"],
    ] {
        let u = user(rules).unwrap();
        assert_eq!(
            denied(&u, sort, &["sort", "k", "GET", "#"]),
            Some(SortOption::Get),
            "{rules:?}"
        );
    }
}

/// SORT's sorted key is only read, its STORE key only written (Redis 7.0's `sortGetKeys`):
/// `%R~*` may sort, `%W~*` may be the destination.
#[test]
fn sort_keys_are_read_and_stored_as_redis_flags_them() {
    let sort = lookup_fullname(b"sort").unwrap();
    let reader = user(&["%R~*", "%W~dst", "+@all"]).unwrap();
    assert_eq!(reader.check(sort, &["sort", "k"][..]), Ok(()));
    assert_eq!(
        reader.check(sort, &["sort", "k", "LIMIT", "0", "1", "STORE", "dst"][..]),
        Ok(())
    );
    assert_eq!(
        reader.check(sort, &["sort", "k", "STORE", "k2"][..]),
        Err(Denied::Key(3))
    );
}

#[test]
fn channel_losses_are_redis_s() {
    let before = user(&["&a", "&b"]).unwrap();
    assert!(!before.loses_channels(&user(&["&b", "&a", "&c"]).unwrap()));
    assert!(before.loses_channels(&user(&["&a"]).unwrap()));
    assert!(!before.loses_channels(&user(&["allchannels"]).unwrap()));
    // As redis-server 7.0.15 does, a user that had every channel loses some when no
    // selector keeps every channel.
    assert!(user(&["allchannels"])
        .unwrap()
        .loses_channels(&user(&["&a"]).unwrap()));
    assert!(!user(&["allchannels"])
        .unwrap()
        .loses_channels(&user(&["&a", "(&*)"]).unwrap()));
}
