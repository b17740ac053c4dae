#!/usr/bin/env python3
"""Generate protocol/src/command/table.rs from a live redis-server 7.0.

Usage (from the repository root):

    python3 tools/gen-command-table.py                      # spawns its own redis-server
    python3 tools/gen-command-table.py --port 6379          # uses a running server on 127.0.0.1

The script talks RESP2 over a plain socket (python3 standard library only), reads
`COMMAND` (arity, flags, legacy key range, key specs, subcommands) and `COMMAND DOCS`
(one-line summaries for the comments), and writes a rustfmt-formatted table of every
command and every subcommand. It writes facts of the server only: how redshard treats a
command (`route_of`) and which commands have a Redis `getkeys_proc` (`getkeys_of`) are
hand-maintained in `protocol/src/command/route.rs` and `protocol/src/command/procs.rs`; the
table calls those `const fn`s, so they are evaluated at compile time.

The one exception is `may_replicate`: Redis 7.0 hides that flag from `COMMAND` on purpose
(src/server.c, addReplyFlagsForCommand), so the commands that carry it are listed below,
copied from redis 7.0.15 src/commands/*.json ("MAY_REPLICATE").
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

# Redis 7.0.15 src/commands/*.json with "MAY_REPLICATE" (hidden from COMMAND's reply).
MAY_REPLICATE = {"eval", "evalsha", "fcall", "pfcount", "publish", "spublish"}

# COMMAND flag name -> Flags constant. Unknown names abort the generation.
COMMAND_FLAGS = {
    "write": "WRITE",
    "readonly": "READONLY",
    "denyoom": "DENYOOM",
    "module": "MODULE",
    "admin": "ADMIN",
    "pubsub": "PUBSUB",
    "noscript": "NOSCRIPT",
    "blocking": "BLOCKING",
    "loading": "LOADING",
    "stale": "STALE",
    "skip_monitor": "SKIP_MONITOR",
    "skip_slowlog": "SKIP_SLOWLOG",
    "asking": "ASKING",
    "fast": "FAST",
    "no_auth": "NO_AUTH",
    "may_replicate": "MAY_REPLICATE",
    "no_mandatory_keys": "NO_MANDATORY_KEYS",
    "no_async_loading": "NO_ASYNC_LOADING",
    "no_multi": "NO_MULTI",
    "movablekeys": "MOVABLEKEYS",
    "allow_busy": "ALLOW_BUSY",
}

# Key-spec flag name (as COMMAND spells it) -> KeySpecFlags constant.
KEY_SPEC_FLAGS = {
    "RO": "RO",
    "RW": "RW",
    "OW": "OW",
    "RM": "RM",
    "access": "ACCESS",
    "update": "UPDATE",
    "insert": "INSERT",
    "delete": "DELETE",
    "not_key": "NOT_KEY",
    "incomplete": "INCOMPLETE",
    "variable_flags": "VARIABLE_FLAGS",
}

REGENERATE = "python3 tools/gen-command-table.py --out protocol/src/command/table.rs"


class RespError(Exception):
    """An error reply from the server."""


class Resp:
    """A minimal blocking RESP2 client."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ValueError("unexpected RESP type %r" % line)


def pairs(flat):
    """A RESP2 flattened map [k1, v1, k2, v2, ...] as a dict."""
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_server():
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not on PATH; pass --port of a running redis-server 7.0")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="gen-command-table-")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if Resp("127.0.0.1", port).call("PING") == "PONG":
                return proc, port, workdir
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not answer PING on port %d" % port)


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def comment(s):
    return " ".join(s.split())


def flags_expr(type_name, names):
    if not names:
        return "%s::NONE" % type_name
    head, rest = names[0], names[1:]
    return "%s::%s" % (type_name, head) + "".join(".union(%s::%s)" % (type_name, n) for n in rest)


# ACL categories in Redis 7.0's order (`ACL CAT`), as AclCategories declares them.
ACL_CATEGORIES = [
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap",
    "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow", "blocking", "dangerous",
    "connection", "transaction", "scripting",
]


def acl_categories(name, raw):
    names = []
    for c in raw:
        c = c[1:] if c.startswith("@") else c
        if c not in ACL_CATEGORIES:
            sys.exit("unknown ACL category %r on %s: add it to ACL_CATEGORIES and AclCategories" % (c, name))
        names.append(c.upper())
    order = [c.upper() for c in ACL_CATEGORIES]
    return sorted(set(names), key=order.index)


def command_flags(name, raw):
    names = []
    for f in raw:
        if f not in COMMAND_FLAGS:
            sys.exit("unknown command flag %r on %s: add it to COMMAND_FLAGS and Flags" % (f, name))
        names.append(COMMAND_FLAGS[f])
    if name in MAY_REPLICATE:
        names.append("MAY_REPLICATE")
    order = list(COMMAND_FLAGS.values())
    return sorted(set(names), key=order.index)


def key_spec(cmd_name, raw):
    spec = pairs(raw)
    flags = []
    for f in spec["flags"]:
        if f not in KEY_SPEC_FLAGS:
            sys.exit("unknown key-spec flag %r on %s" % (f, cmd_name))
        flags.append(KEY_SPEC_FLAGS[f])
    bs = pairs(spec["begin_search"])
    bs_spec = pairs(bs["spec"] or [])
    if bs["type"] == "index":
        begin = "BeginSearch::Index(%d)" % bs_spec["index"]
    elif bs["type"] == "keyword":
        begin = "BeginSearch::Keyword { keyword: %s, startfrom: %d }" % (
            rust_str(bs_spec["keyword"]), bs_spec["startfrom"])
    elif bs["type"] == "unknown":
        begin = "BeginSearch::Unknown"
    else:
        sys.exit("unknown begin_search type %r on %s" % (bs["type"], cmd_name))
    fk = pairs(spec["find_keys"])
    fk_spec = pairs(fk["spec"] or [])
    if fk["type"] == "range":
        find = "FindKeys::Range { lastkey: %d, keystep: %d, limit: %d }" % (
            fk_spec["lastkey"], fk_spec["keystep"], fk_spec["limit"])
    elif fk["type"] == "keynum":
        find = "FindKeys::Keynum { keynumidx: %d, firstkey: %d, keystep: %d }" % (
            fk_spec["keynumidx"], fk_spec["firstkey"], fk_spec["keystep"])
    elif fk["type"] == "unknown":
        find = "FindKeys::Unknown"
    else:
        sys.exit("unknown find_keys type %r on %s" % (fk["type"], cmd_name))
    order = list(KEY_SPEC_FLAGS.values())
    flags = sorted(set(flags), key=order.index)
    notes = comment(spec.get("notes") or "")
    return notes, "KeySpec { flags: %s, begin_search: %s, find_keys: %s }" % (
        flags_expr("KeySpecFlags", flags), begin, find)


# Subcommands the proxy answers itself that are newer than the table's Redis version: their
# entries are hand-written in `protocol/src/command/extra.rs`, but their ids belong here, with
# every other command's.
EXTRA_NAMES = ["client|no-touch", "client|setinfo"]


def variant_name(name):
    """`client|setname` -> `ClientSetname`, `georadius_ro` -> `GeoradiusRo`."""
    return "".join(part.capitalize() for part in re.split(r"[|_-]", name) if part)


def sub_static_name(name):
    return "SUB_" + name.upper().replace("-", "_").replace("|", "_")


def emit_entry(out, cmd, docs):
    name, arity, flags, first, last, step = cmd[0], cmd[1], cmd[2], cmd[3], cmd[4], cmd[5]
    doc = docs.get(name, {})
    summary = comment(doc.get("summary", ""))
    since = doc.get("since", "?")
    group = doc.get("group", "?")
    line = "%s: %s (since %s, group %s)" % (name.upper(), summary, since, group)
    out.extend(textwrap.wrap(line, 96, initial_indent="    // ", subsequent_indent="    // "))
    out.append("    CommandSpec {")
    out.append("        name: %s," % rust_str(name))
    out.append("        id: CommandId::%s," % variant_name(name))
    out.append("        arity: %d," % arity)
    out.append("        flags: %s," % flags_expr("Flags", command_flags(name, flags)))
    out.append("        acl: %s," % flags_expr("AclCategories", acl_categories(name, cmd[6])))
    out.append("        first_key: %d," % first)
    out.append("        last_key: %d," % last)
    out.append("        step: %d," % step)
    specs = [key_spec(name, ks) for ks in cmd[8]]
    if not specs:
        out.append("        key_specs: &[],")
    else:
        out.append("        key_specs: &[")
        for notes, text in specs:
            if notes:
                out.extend(textwrap.wrap(notes, 88, initial_indent="            // ",
                                         subsequent_indent="            // "))
            out.append("            %s," % text)
        out.append("        ],")
    if cmd[9]:
        out.append("        subcommands: &%s," % sub_static_name(name))
    else:
        out.append("        subcommands: &[],")
    out.append("        route: route_of(CommandId::%s)," % variant_name(name))
    out.append("        getkeys: getkeys_of(CommandId::%s)," % variant_name(name))
    out.append("    },")


def collect_docs(raw):
    """COMMAND DOCS reply -> {name: docs dict}, subcommands included."""
    docs = {}
    for i in range(0, len(raw), 2):
        name, body = raw[i], pairs(raw[i + 1])
        docs[name] = body
        if "subcommands" in body:
            docs.update(collect_docs(body["subcommands"]))
    return docs


def generate(conn):
    server_info = conn.call("INFO", "server")
    version = next(
        line.split(":", 1)[1].strip()
        for line in server_info.splitlines()
        if line.startswith("redis_version:")
    )
    if not version.startswith("7.0."):
        print("warning: generating from redis %s, not 7.0" % version, file=sys.stderr)
    commands = sorted(conn.call("COMMAND"), key=lambda c: c[0])
    docs = collect_docs(conn.call("COMMAND", "DOCS"))
    containers = [c for c in commands if c[9]]
    total = len(commands) + sum(len(c[9]) for c in containers)

    out = []
    out.append("// @generated by tools/gen-command-table.py from redis-server %s. DO NOT EDIT." % version)
    out.append("//")
    out.append("// Regenerate (needs python3 and redis-server 7.0 on PATH; the script spawns its own")
    out.append("// server on a free 127.0.0.1 port, or pass `--port P` to use a running one):")
    out.append("//")
    out.append("//     %s" % REGENERATE)
    out.append("//")
    out.append("// %d commands, %d with subcommands, %d entries in all." % (len(commands), len(containers), total))
    out.append("// `route` and `getkeys` are hand-maintained in route.rs and procs.rs, by CommandId.")
    out.append("")
    out.append("//! The generated Redis %s command table (see the header comment)." % version)
    out.append("")
    out.append("use super::flags::{AclCategories, Flags, KeySpecFlags};")
    out.append("use super::procs::getkeys_of;")
    out.append("use super::route::route_of;")
    out.append("use super::{BeginSearch, CommandSpec, FindKeys, KeySpec};")
    out.append("")
    out.append("/// The `redis_version` of the server this table was generated from.")
    out.append("pub const REDIS_VERSION: &str = %s;" % rust_str(version))
    out.append("")
    names = sorted([c[0] for c in commands] + [s[0] for c in containers for s in c[9]] + EXTRA_NAMES)
    variants = [variant_name(n) for n in names]
    if len(set(variants)) != len(variants):
        raise SystemExit("two command names give the same CommandId variant")
    out.append("/// The id of every command and subcommand: a `match` on it is checked by the compiler,")
    out.append("/// where a `match` on [`CommandSpec::name`] would fall through a typo or a missing arm.")
    out.append("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]")
    out.append("pub enum CommandId {")
    for n, v in zip(names, variants):
        out.append("    /// `%s`%s" % (n.replace("|", " ").upper(), " (entry in `extra.rs`)" if n in EXTRA_NAMES else ""))
        out.append("    %s," % v)
    out.append("}")
    out.append("")
    out.append("/// Every top-level command, sorted by name.")
    out.append("pub(super) static COMMANDS: [CommandSpec; %d] = [" % len(commands))
    for c in commands:
        emit_entry(out, c, docs)
    out.append("];")
    for c in containers:
        subs = sorted(c[9], key=lambda s: s[0])
        out.append("")
        out.append("/// The subcommands of `%s`, sorted by name." % c[0].upper())
        out.append("static %s: [CommandSpec; %d] = [" % (sub_static_name(c[0]), len(subs)))
        for s in subs:
            emit_entry(out, s, docs)
        out.append("];")
    out.append("")
    out.append("/// Index into [`COMMANDS`] of a lowercase command name.")
    out.append("pub(super) fn index_of(lower: &[u8]) -> Option<usize> {")
    out.append("    Some(match lower {")
    for i, c in enumerate(commands):
        out.append("        b%s => %d," % (rust_str(c[0]), i))
    out.append("        _ => return None,")
    out.append("    })")
    out.append("}")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, help="port of a running redis-server on 127.0.0.1")
    parser.add_argument("--out", default="protocol/src/command/table.rs")
    parser.add_argument("--no-rustfmt", action="store_true", help="skip running rustfmt")
    args = parser.parse_args()

    proc = workdir = None
    port = args.port
    if port is None:
        proc, port, workdir = spawn_server()
    try:
        text = generate(Resp("127.0.0.1", port))
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
            shutil.rmtree(workdir, ignore_errors=True)

    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    if not args.no_rustfmt:
        rustfmt = shutil.which("rustfmt")
        if rustfmt is None:
            print("warning: rustfmt not found; %s is not formatted" % args.out, file=sys.stderr)
        else:
            subprocess.run([rustfmt, "--edition", "2021", args.out], check=True)
    print("wrote %s" % os.path.normpath(args.out))


if __name__ == "__main__":
    main()
