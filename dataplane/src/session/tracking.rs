//! CLIENT TRACKING, CACHING, GETREDIR and TRACKINGINFO, answered by the proxy with Redis 7's
//! texts and rules (`networking.c`, `tracking.c`), and the recording of a tracking client's
//! reads as it sends them. The invalidations themselves come from [`crate::tracking`].

use bytes::{Bytes, BytesMut};

use super::dispatch::Action;
use super::Ctx;
use crate::tracking::Mode;
use redshard_protocol::client_error::ClientError;
use redshard_protocol::command::{CommandId, CommandSpec, Flags};
use redshard_protocol::resp::{encode, parse_i64, Args, Protocol};

/// A client's tracking settings, while tracking is on.
#[derive(Debug, Default)]
pub(crate) struct ClientTracking {
    /// REDIRECT's client id (0: none, as Redis shows it).
    redirect: u64,
    /// BCAST mode.
    bcast: bool,
    /// BCAST's prefixes, sorted (the empty prefix when none was given).
    prefixes: Vec<Vec<u8>>,
    /// OPTIN: only reads after `CLIENT CACHING YES` are tracked.
    optin: bool,
    /// OPTOUT: reads after `CLIENT CACHING NO` are not tracked.
    optout: bool,
    /// NOLOOP (accepted and shown; see docs/client-side-caching.md for what it does here).
    noloop: bool,
    /// CLIENT CACHING YES/NO was given for the next command (or transaction).
    caching: bool,
    /// Keys read by the commands queued in the transaction under way: recorded when EXEC is
    /// sent, not when queued, so that an invalidation cannot come before EXEC's reply.
    queued: Vec<Bytes>,
    /// A read was recorded and its reply entry not reserved yet: the hub holds this client's
    /// invalidations until [`after_dispatch`] (see [`crate::tracking::Tracking::record`]).
    recording: bool,
}

/// Handles the four tracking subcommands.
pub(super) fn handle(ctx: &mut Ctx, spec: &CommandSpec, args: Args<'_>) -> Action {
    match spec.id {
        CommandId::ClientTracking => tracking(ctx, args),
        CommandId::ClientCaching => caching(ctx, args),
        CommandId::ClientGetredir => {
            let mut out = BytesMut::new();
            let redirect = ctx
                .tracking
                .as_ref()
                .map_or(-1, |t| i64::try_from(t.redirect).unwrap_or(i64::MAX));
            encode::integer(&mut out, redirect);
            Action::reply(ctx, out.freeze())
        }
        _ => tracking_info(ctx),
    }
}

/// The options of CLIENT TRACKING, parsed.
#[derive(Default)]
struct Options {
    redirect: Option<u64>,
    bcast: bool,
    optin: bool,
    optout: bool,
    noloop: bool,
    prefixes: Vec<Vec<u8>>,
}

/// Parses the options after ON|OFF, with Redis's errors in Redis's order.
fn parse_options(ctx: &Ctx, args: Args<'_>) -> Result<Options, ClientError> {
    let mut options = Options::default();
    let mut j = 3;
    while j < args.len() {
        let arg = args.get(j);
        let more = j + 1 < args.len();
        if arg.eq_ignore_ascii_case(b"redirect") && more {
            j += 1;
            if options.redirect.is_some() {
                return Err(ClientError::TrackingRedirectTwice);
            }
            let id = parse_i64(args.get(j)).ok_or(ClientError::NotAnInteger)?;
            let id = u64::try_from(id).map_err(|_| ClientError::TrackingRedirectMissing)?;
            if ctx.state.clients.get(id).is_none() {
                return Err(ClientError::TrackingRedirectMissing);
            }
            options.redirect = Some(id);
        } else if arg.eq_ignore_ascii_case(b"bcast") {
            options.bcast = true;
        } else if arg.eq_ignore_ascii_case(b"optin") {
            options.optin = true;
        } else if arg.eq_ignore_ascii_case(b"optout") {
            options.optout = true;
        } else if arg.eq_ignore_ascii_case(b"noloop") {
            options.noloop = true;
        } else if arg.eq_ignore_ascii_case(b"prefix") && more {
            j += 1;
            options.prefixes.push(args.get(j).to_vec());
        } else {
            return Err(ClientError::SyntaxError);
        }
        j += 1;
    }
    Ok(options)
}

/// Whether one of two prefixes starts the other (Redis's `stringCheckPrefix`).
fn overlap(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// The first overlap of a new prefix with one the client has, or with another new one.
fn prefix_collision(existing: &[Vec<u8>], new: &[Vec<u8>]) -> Option<ClientError> {
    for (i, prefix) in new.iter().enumerate() {
        if let Some(other) = existing.iter().find(|e| overlap(e, prefix)) {
            return Some(ClientError::TrackingPrefixOverlap {
                prefix: prefix.as_slice().into(),
                other: other.as_slice().into(),
                existing: true,
            });
        }
        if let Some(other) = new[i + 1..].iter().find(|o| overlap(prefix, o)) {
            return Some(ClientError::TrackingPrefixOverlap {
                prefix: prefix.as_slice().into(),
                other: other.as_slice().into(),
                existing: false,
            });
        }
    }
    None
}

/// `CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p ...] [BCAST] [OPTIN] [OPTOUT] [NOLOOP]`.
fn tracking(ctx: &mut Ctx, args: Args<'_>) -> Action {
    let options = match parse_options(ctx, args) {
        Ok(options) => options,
        Err(e) => return Action::error(ctx, e),
    };
    let switch = args.get(2);
    if switch.eq_ignore_ascii_case(b"off") {
        reset(ctx);
        return Action::reply(ctx, Bytes::from_static(encode::OK));
    }
    if !switch.eq_ignore_ascii_case(b"on") {
        return Action::error(ctx, ClientError::SyntaxError);
    }
    if !options.bcast && !options.prefixes.is_empty() {
        return Action::error(ctx, ClientError::TrackingPrefixNeedsBcast);
    }
    if let Some(current) = ctx.tracking.as_deref() {
        if current.bcast != options.bcast {
            return Action::error(ctx, ClientError::TrackingBcastSwitch);
        }
    }
    if options.bcast && (options.optin || options.optout) {
        return Action::error(ctx, ClientError::TrackingOptWithBcast);
    }
    if options.optin && options.optout {
        return Action::error(ctx, ClientError::TrackingOptinAndOptout);
    }
    if let Some(current) = ctx.tracking.as_deref() {
        if (options.optin && current.optout) || (options.optout && current.optin) {
            return Action::error(ctx, ClientError::TrackingOptSwitch);
        }
    }
    let existing: &[Vec<u8>] = ctx.tracking.as_deref().map_or(&[], |t| &t.prefixes);
    if options.bcast {
        if let Some(e) = prefix_collision(existing, &options.prefixes) {
            return Action::error(ctx, e);
        }
    }
    // As Redis's enableTracking: the flags are replaced, prefixes added to those it had.
    let mut prefixes = existing.to_vec();
    if options.bcast {
        if options.prefixes.is_empty() {
            if !prefixes.iter().any(Vec::is_empty) {
                prefixes.push(Vec::new());
            }
        } else {
            prefixes.extend(options.prefixes);
        }
        // In Redis's order (its prefixes are a radix tree): bytewise.
        prefixes.sort();
    }
    let caching = ctx.tracking.as_deref().is_some_and(|t| t.caching);
    let settings = ClientTracking {
        redirect: options.redirect.unwrap_or(0),
        bcast: options.bcast,
        prefixes,
        optin: options.optin,
        optout: options.optout,
        noloop: options.noloop,
        caching,
        queued: Vec::new(),
        recording: false,
    };
    let mode = Mode {
        redirect: options.redirect,
        bcast: settings.bcast.then(|| settings.prefixes.clone()),
    };
    ctx.tracking = Some(Box::new(settings));
    let ok = ctx.queue.reserve();
    ctx.state.tracking.enable(&ctx.state, &ctx.client, mode, ok);
    if let Some(target) = options.redirect {
        // A parked target would get its invalidations only at its next request; once
        // registered as a target (just above), it does not park again.
        if let Some(room) = super::park::room_of(&ctx.state) {
            room.release(target);
        }
    }
    // Nothing after it is sent before it is answered: by then the masters' tracking
    // connections are up, so a read right behind it is covered.
    ctx.barrier = true;
    Action::Done
}

/// `CLIENT CACHING YES|NO`.
fn caching(ctx: &mut Ctx, args: Args<'_>) -> Action {
    let Some(tracking) = ctx.tracking.as_deref_mut() else {
        return Action::error(ctx, ClientError::CachingWithoutTracking);
    };
    let option = args.get(2);
    let result = if option.eq_ignore_ascii_case(b"yes") {
        if tracking.optin {
            tracking.caching = true;
            Ok(())
        } else {
            Err(ClientError::CachingYesWithoutOptin)
        }
    } else if option.eq_ignore_ascii_case(b"no") {
        if tracking.optout {
            tracking.caching = true;
            Ok(())
        } else {
            Err(ClientError::CachingNoWithoutOptout)
        }
    } else {
        Err(ClientError::SyntaxError)
    };
    match result {
        Ok(()) => Action::reply(ctx, Bytes::from_static(encode::OK)),
        Err(e) => Action::error(ctx, e),
    }
}

/// `CLIENT TRACKINGINFO`: flags, redirect and prefixes, as Redis answers.
fn tracking_info(ctx: &Ctx) -> Action {
    let mut flags: Vec<&[u8]> = Vec::new();
    let (redirect, prefixes): (i64, &[Vec<u8>]) = match ctx.tracking.as_deref() {
        None => {
            flags.push(b"off");
            (-1, &[])
        }
        Some(t) => {
            flags.push(b"on");
            if t.bcast {
                flags.push(b"bcast");
            }
            if t.optin {
                flags.push(b"optin");
                if t.caching {
                    flags.push(b"caching-yes");
                }
            }
            if t.optout {
                flags.push(b"optout");
                if t.caching {
                    flags.push(b"caching-no");
                }
            }
            if t.noloop {
                flags.push(b"noloop");
            }
            if t.redirect != 0 && ctx.state.tracking.broken_redirect(ctx.client.id) {
                flags.push(b"broken_redirect");
            }
            (i64::try_from(t.redirect).unwrap_or(i64::MAX), &t.prefixes)
        }
    };
    let mut out = BytesMut::new();
    encode::map_header(&mut out, ctx.protocol, 3);
    encode::bulk(&mut out, b"flags");
    match ctx.protocol {
        Protocol::Resp2 => encode::array_header(&mut out, flags.len()),
        Protocol::Resp3 => out.extend_from_slice(format!("~{}\r\n", flags.len()).as_bytes()),
    }
    for flag in flags {
        encode::bulk(&mut out, flag);
    }
    encode::bulk(&mut out, b"redirect");
    encode::integer(&mut out, redirect);
    encode::bulk(&mut out, b"prefixes");
    encode::array_header(&mut out, prefixes.len());
    for prefix in prefixes {
        encode::bulk(&mut out, prefix);
    }
    Action::reply(ctx, out.freeze())
}

/// Called for each command of a tracking client as it is dispatched: records the keys of a
/// read (default mode, under OPTIN/OPTOUT's rules; in a transaction, when EXEC is sent), and
/// ends a CLIENT CACHING's effect after the command (or transaction) it applied to.
pub(super) fn on_command(ctx: &mut Ctx, spec: &CommandSpec, args: Args<'_>) {
    let Some(tracking) = ctx.tracking.as_deref_mut() else {
        return;
    };
    // As Redis: the flag lasts through a transaction (MULTI .. EXEC / DISCARD).
    let in_multi = spec.id == CommandId::Multi
        || (ctx.tx.is_some() && !matches!(spec.id, CommandId::Exec | CommandId::Discard));
    let is_client = spec.name.starts_with("client|");
    let caching = tracking.caching;
    if !in_multi && !is_client {
        tracking.caching = false;
    }
    match spec.id {
        CommandId::Multi | CommandId::Discard => tracking.queued.clear(),
        CommandId::Exec if !tracking.queued.is_empty() => {
            let keys = std::mem::take(&mut tracking.queued);
            tracking.recording = true;
            record(ctx, keys.iter().map(|k| &k[..]));
            return;
        }
        _ => {}
    }
    if tracking.bcast || (tracking.optin && !caching) || (tracking.optout && caching) {
        return;
    }
    // Scripts: Redis tracks the keys their commands read; the proxy, which does not see
    // those, records the keys they declare, or with none the keys their body names as
    // literals (`ctx.script_keys`).
    if !(spec.flags.contains(Flags::READONLY) || super::dispatch::is_script(spec.id))
        || spec.flags.contains(Flags::PUBSUB)
    {
        return;
    }
    // The scratch list the routing of this request fills again right after.
    if spec.key_indices(&args, &mut ctx.keys).is_err() {
        return;
    }
    if ctx.keys.is_empty() {
        if ctx.script_keys.is_empty() {
            return;
        }
        let keys = ctx.script_keys.clone();
        if ctx.tx.is_some() {
            tracking.queued.extend(keys);
            return;
        }
        tracking.recording = true;
        record(ctx, keys.iter().map(|k| &k[..]));
        return;
    }
    if ctx.tx.is_some() {
        tracking.queued.extend(
            ctx.keys
                .iter()
                .map(|&k| Bytes::copy_from_slice(args.get(k))),
        );
        return;
    }
    tracking.recording = true;
    let keys = std::mem::take(&mut ctx.keys);
    record(ctx, keys.iter().map(|&k| args.get(k)));
    ctx.keys = keys;
}

/// Records that this client sends a read of `keys`; its invalidations are held until
/// [`after_dispatch`].
fn record<'a>(ctx: &Ctx, keys: impl Iterator<Item = &'a [u8]>) {
    let max_keys = ctx.state.live.now().limits.tracking_table_max_keys;
    ctx.state
        .tracking
        .record(&ctx.state.clients, ctx.client.id, keys, max_keys);
}

/// After a request was dispatched (its reply entry reserved) or held back: invalidations
/// that arrived since its read was recorded go out now, behind that reply.
pub(super) fn after_dispatch(ctx: &mut Ctx) {
    if let Some(tracking) = ctx.tracking.as_deref_mut() {
        if std::mem::take(&mut tracking.recording) {
            ctx.state.tracking.recorded(ctx.client.id);
        }
    }
}

/// CLIENT TRACKING OFF and RESET: tracking off.
pub(super) fn reset(ctx: &mut Ctx) {
    if ctx.tracking.take().is_some() {
        ctx.state.tracking.disable(ctx.client.id);
    }
}
