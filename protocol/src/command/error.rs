//! The error replies this module produces, byte for byte as Redis 7.0 writes them.

use std::fmt;

use super::{ArgList, CommandId, CommandSpec};

/// What went wrong with a request, for callers that count or log errors by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandErrorKind {
    /// The command name is not in the table.
    UnknownCommand,
    /// The command is a container and the subcommand is not one of its subcommands.
    UnknownSubcommand,
    /// The number of arguments does not match the command's arity.
    WrongArity,
    /// The arguments that say where the keys are (`numkeys`) are invalid, so the keys cannot
    /// be found; the text is the reply the command itself would give.
    BadKeyArguments,
}

/// An error reply that Redis 7.0 would give to a request, produced without asking a backend.
///
/// [`as_bytes`](Self::as_bytes) holds the exact bytes Redis writes between the leading `-`
/// and the CRLF (for example `ERR unknown command 'foo', with args beginning with: `). They
/// may echo client bytes that are not UTF-8, so `Display` is a lossy rendering of them; send
/// `as_bytes` to the client. Redis maps CR and LF to spaces in these texts, and so does this
/// type, so the bytes are always safe to frame as a simple error.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", String::from_utf8_lossy(&self.text))]
pub struct CommandError {
    /// Why the request was refused.
    kind: CommandErrorKind,
    /// The command whose arity failed, so that callers can react to a command without
    /// comparing names (a malformed EXEC discards the transaction).
    command: Option<CommandId>,
    /// The reply text without `-` and CRLF.
    text: Box<[u8]>,
}

impl fmt::Debug for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandError")
            .field("kind", &self.kind)
            .field("command", &self.command)
            .field("text", &String::from_utf8_lossy(&self.text))
            .finish()
    }
}

/// How much of a client argument Redis's `%.128s` echoes.
const ECHO_MAX: usize = 128;

/// The part of `arg` that C's `%.Ns` prints: up to the first NUL byte, at most `max` bytes.
fn c_string_prefix(arg: &[u8], max: usize) -> &[u8] {
    let end = arg.iter().position(|&b| b == 0).unwrap_or(arg.len());
    &arg[..end.min(max)]
}

impl CommandError {
    /// Why the request was refused.
    #[must_use]
    pub fn kind(&self) -> CommandErrorKind {
        self.kind
    }

    /// The command a [`CommandErrorKind::WrongArity`] error is about; `None` for the other
    /// kinds.
    #[must_use]
    pub fn command(&self) -> Option<CommandId> {
        self.command
    }

    /// The exact reply text, without the leading `-` and the trailing CRLF.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }

    fn new(kind: CommandErrorKind, mut text: Vec<u8>) -> Self {
        // processCommand: sdsmapchars(err, "\r\n", "  ", 2).
        for b in &mut text {
            if *b == b'\r' || *b == b'\n' {
                *b = b' ';
            }
        }
        Self {
            kind,
            command: None,
            text: text.into_boxed_slice(),
        }
    }

    /// `commandCheckExistence`, unknown command: the name and the first arguments are
    /// echoed, each through `%.128s`-like truncation, the arguments until 128 bytes of them
    /// have been written.
    pub(crate) fn unknown_command<A: ArgList + ?Sized>(args: &A) -> Self {
        let name = if args.is_empty() {
            &[][..]
        } else {
            args.arg(0)
        };
        let mut text = Vec::with_capacity(64);
        text.extend_from_slice(b"ERR unknown command '");
        text.extend_from_slice(c_string_prefix(name, ECHO_MAX));
        text.extend_from_slice(b"', with args beginning with: ");
        let mut echoed = 0;
        for i in 1..args.len() {
            if echoed >= ECHO_MAX {
                break;
            }
            let piece = c_string_prefix(args.arg(i), ECHO_MAX - echoed);
            text.push(b'\'');
            text.extend_from_slice(piece);
            text.extend_from_slice(b"' ");
            echoed += piece.len() + 3;
        }
        Self::new(CommandErrorKind::UnknownCommand, text)
    }

    /// `commandCheckExistence`, unknown subcommand of a container command.
    pub(crate) fn unknown_subcommand(container: &CommandSpec, sub: &[u8]) -> Self {
        let mut text = Vec::with_capacity(64);
        text.extend_from_slice(b"ERR unknown subcommand '");
        text.extend_from_slice(c_string_prefix(sub, ECHO_MAX));
        text.extend_from_slice(b"'. Try ");
        text.extend(container.name.bytes().map(|b| b.to_ascii_uppercase()));
        text.extend_from_slice(b" HELP.");
        Self::new(CommandErrorKind::UnknownSubcommand, text)
    }

    /// `commandCheckArity`: names the command as Redis's `fullname` (`config|get`).
    pub(crate) fn wrong_arity(spec: &CommandSpec) -> Self {
        let text = format!("ERR wrong number of arguments for '{}' command", spec.name);
        Self {
            command: Some(spec.id),
            ..Self::new(CommandErrorKind::WrongArity, text.into_bytes())
        }
    }

    /// The command's own reply to an invalid `numkeys` (or to what it checks before that).
    pub(crate) fn bad_key_arguments(text: &str) -> Self {
        Self::new(CommandErrorKind::BadKeyArguments, text.as_bytes().to_vec())
    }
}
