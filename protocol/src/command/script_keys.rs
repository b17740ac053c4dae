//! The keys a Lua script names as literals, for a script called with no declared key.
//!
//! redshard routes a script by the keys it declares (`EVAL script numkeys key...`). A script
//! written for one server often declares none and names its keys in its body
//! (`redis.call('GET', 'foo')`). [`literal_keys`] reads such a body and returns every key it
//! can touch, when — and only when — that is certain from the text alone:
//!
//! - every `redis.call(...)` / `redis.pcall(...)` names its command with a string literal,
//!   and each argument the command takes as a key is a string literal (for a command whose
//!   key positions depend on its arguments' values, such as `ZUNIONSTORE`'s `numkeys` or
//!   `XREAD`'s `STREAMS`, every argument must be a literal; `SORT` is never inferred: its
//!   `BY` and `GET` patterns name keys at run time);
//! - the number of arguments is fixed: the last argument is not a call or `...`, which could
//!   expand to several values;
//! - `redis` is used only as `redis.<field>`, never passed around, indexed with `[...]` or
//!   shadowed, and nothing in the script can reach it another way: the script does not name
//!   `loadstring`, `load`, `getfenv`, `setfenv`, `_G`, `rawget`, `rawset`, `getmetatable`,
//!   `setmetatable`, `debug`, `dofile`, `loadfile`, `require`, `module` or `package`.
//!
//! Anything else gives `None`: the caller keeps treating the script as one without keys. A
//! key listed that a given run does not touch (a branch not taken) only narrows where the
//! script may run. The lexer follows Lua 5.1's (Redis's Lua): short strings with their
//! escapes, long strings and comments (`[==[ ... ]==]`), and a first `#!` line (Redis's
//! shebang with the script's flags).

use bytes::Bytes;
use smallvec::SmallVec;

use super::{BeginSearch, CommandId, FindKeys, GetKeys};

/// Names whose use could reach `redis.call` without naming it, or load code the text does
/// not show.
const FORBIDDEN: &[&[u8]] = &[
    b"loadstring",
    b"load",
    b"getfenv",
    b"setfenv",
    b"_G",
    b"rawget",
    b"rawset",
    b"getmetatable",
    b"setmetatable",
    b"debug",
    b"dofile",
    b"loadfile",
    b"require",
    b"module",
    b"package",
];

/// One Lua token, as far as the analysis needs to tell them apart.
#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    /// A name (identifier or keyword).
    Name(&'a [u8]),
    /// A string literal's value, escapes resolved.
    Str(Vec<u8>),
    /// A number literal.
    Number,
    /// An operator or punctuation (`.`, `..`, `...`, `(`, `==`, ...).
    Symbol(&'a [u8]),
}

/// Every key the script `body` can touch, when its text shows them all as literals (see the
/// module's documentation); `None` when it does not. Linear in the body's length.
#[must_use]
pub fn literal_keys(body: &[u8]) -> Option<Vec<Bytes>> {
    let tokens = lex(body)?;
    let brackets = Brackets::of(&tokens)?;
    let mut keys: Vec<Bytes> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let Token::Name(name) = token else {
            continue;
        };
        // A field (`t.load`, `obj:debug`) is not the global of that name.
        if i > 0 && matches!(tokens[i - 1], Token::Symbol(b".") | Token::Symbol(b":")) {
            continue;
        }
        if FORBIDDEN.contains(name) {
            return None;
        }
        if *name != b"redis" {
            continue;
        }
        let Some(Token::Symbol(b".")) = tokens.get(i + 1) else {
            return None;
        };
        let Some(Token::Name(field)) = tokens.get(i + 2) else {
            return None;
        };
        if !matches!(*field, b"call" | b"pcall") {
            continue;
        }
        let Some(Token::Symbol(b"(")) = tokens.get(i + 3) else {
            return None;
        };
        call_keys(&tokens, &brackets, i + 3, &mut keys)?;
    }
    Some(keys)
}

/// Where each bracket of a token list closes, and the commas directly inside each: found in
/// one pass, so that reading every call costs the length of its own arguments only.
struct Brackets {
    /// For an opening bracket's index, its closing bracket's; for a closing one's, its
    /// opening bracket's; unused elsewhere.
    partner: Vec<usize>,
    /// The commas directly inside each `(`, by the index of the `(`.
    commas: std::collections::HashMap<usize, Vec<usize>>,
    /// How many `function` keywords come before each token (and one past the end).
    functions: Vec<u32>,
}

impl Brackets {
    /// The brackets of `tokens`; `None` when they do not match (Lua would not compile it).
    fn of(tokens: &[Token<'_>]) -> Option<Self> {
        let mut partner = vec![usize::MAX; tokens.len()];
        let mut commas: std::collections::HashMap<usize, Vec<usize>> =
            std::collections::HashMap::new();
        let mut functions = Vec::with_capacity(tokens.len() + 1);
        let mut open: Vec<usize> = Vec::new();
        let mut seen = 0u32;
        for (i, token) in tokens.iter().enumerate() {
            functions.push(seen);
            match token {
                Token::Name(b"function") => seen += 1,
                Token::Symbol(b"(" | b"[" | b"{") => open.push(i),
                Token::Symbol(closer @ (b")" | b"]" | b"}")) => {
                    let o = open.pop()?;
                    let expected: &[u8] = match tokens[o] {
                        Token::Symbol(b"(") => b")",
                        Token::Symbol(b"[") => b"]",
                        _ => b"}",
                    };
                    if *closer != expected {
                        return None;
                    }
                    partner[o] = i;
                    partner[i] = o;
                }
                Token::Symbol(b",") => {
                    if let Some(&o) = open.last() {
                        if matches!(tokens[o], Token::Symbol(b"(")) {
                            commas.entry(o).or_default().push(i);
                        }
                    }
                }
                _ => {}
            }
        }
        functions.push(seen);
        open.is_empty().then_some(Self {
            partner,
            commas,
            functions,
        })
    }

    /// The arguments of the call whose `(` is at `open`, as index ranges; `None` for an
    /// empty argument or a function defined among them (its body's commas are statements').
    fn args(&self, open: usize) -> Option<SmallVec<[std::ops::Range<usize>; 8]>> {
        let close = self.partner[open];
        if self.functions[close] != self.functions[open] {
            return None;
        }
        let mut args = SmallVec::new();
        let mut start = open + 1;
        for &comma in self.commas.get(&open).map_or(&[][..], Vec::as_slice) {
            args.push(start..comma);
            start = comma + 1;
        }
        if start < close || !args.is_empty() {
            args.push(start..close);
        }
        if args.iter().any(|a: &std::ops::Range<usize>| a.is_empty()) {
            return None;
        }
        Some(args)
    }
}

/// The keys of the `redis.call(` whose parenthesis is at `open`.
fn call_keys(
    tokens: &[Token<'_>],
    brackets: &Brackets,
    open: usize,
    keys: &mut Vec<Bytes>,
) -> Option<()> {
    let args = brackets.args(open)?;
    // The last argument must be one value: not a call (`f(x)`, `f"x"`, `f{x}`) or `...`.
    if ends_with_call(tokens, brackets, args.last()?.clone()) {
        return None;
    }
    let values: SmallVec<[Option<&[u8]>; 8]> = args
        .iter()
        .map(|arg| match &tokens[arg.clone()] {
            [Token::Str(value)] => Some(value.as_slice()),
            _ => None,
        })
        .collect();
    // Placeholders stand for the arguments that are not literals.
    let argv: SmallVec<[&[u8]; 8]> = values.iter().map(|v| v.unwrap_or(b"")).collect();
    values.first().copied().flatten()?;
    let spec = super::resolve(argv.as_slice()).ok()?;
    if matches!(spec.id, CommandId::Sort | CommandId::SortRo) {
        return None;
    }
    // Key positions that do not depend on the arguments' values (SET's and BITFIELD's proc
    // only reads their flags: the key is always argument 1).
    let fixed = matches!(spec.getkeys, GetKeys::None | GetKeys::FirstArg)
        && spec.key_specs.iter().all(|ks| {
            matches!(ks.begin_search, BeginSearch::Index(_))
                && matches!(ks.find_keys, FindKeys::Range { .. })
        });
    if !fixed && values.iter().any(Option::is_none) {
        return None;
    }
    let mut indices = SmallVec::<[usize; 8]>::new();
    spec.key_indices(argv.as_slice(), &mut indices).ok()?;
    for index in indices {
        keys.push(Bytes::copy_from_slice(
            values.get(index).copied().flatten()?,
        ));
    }
    Some(())
}

/// Whether the expression `arg` (a range of `tokens`) ends with a function call or `...`
/// (either may be several values): its last token closes a call's arguments, which follow a
/// name, `)`, `]` or a string (a parenthesised expression `(f(x))` is one value).
fn ends_with_call(tokens: &[Token<'_>], brackets: &Brackets, arg: std::ops::Range<usize>) -> bool {
    let Some(last) = arg.end.checked_sub(1).filter(|&l| l >= arg.start) else {
        return false;
    };
    let open = match tokens[last] {
        Token::Symbol(b"...") => return true,
        Token::Str(_) => last,
        Token::Symbol(b")" | b"}") => brackets.partner[last],
        _ => return false,
    };
    open > arg.start
        && matches!(
            tokens[open - 1],
            Token::Name(_) | Token::Str(_) | Token::Symbol(b")" | b"]" | b"}")
        )
        && !matches!(
            tokens[open - 1],
            Token::Name(b"and" | b"or" | b"not" | b"return" | b"in" | b"then" | b"do")
        )
}

/// Lua 5.1's tokens of `body`; `None` for what Lua would not compile either.
fn lex(body: &[u8]) -> Option<Vec<Token<'_>>> {
    let mut tokens = Vec::new();
    let mut i = 0;
    if body.starts_with(b"#!") {
        i = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    }
    while let Some(&c) = body.get(i) {
        match c {
            b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => i += 1,
            b'-' if body.get(i + 1) == Some(&b'-') => {
                i += 2;
                if let Some((_, end)) = long_bracket(body, i) {
                    i = end;
                } else {
                    while body.get(i).is_some_and(|&b| b != b'\n') {
                        i += 1;
                    }
                }
            }
            b'[' if long_bracket(body, i).is_some() => {
                let (value, end) = long_bracket(body, i)?;
                tokens.push(Token::Str(value.to_vec()));
                i = end;
            }
            b'"' | b'\'' => {
                let (value, end) = short_string(body, i)?;
                tokens.push(Token::Str(value));
                i = end;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while body
                    .get(i)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                {
                    i += 1;
                }
                tokens.push(Token::Name(&body[start..i]));
            }
            b'0'..=b'9' => {
                i = number_end(body, i);
                tokens.push(Token::Number);
            }
            b'.' if body.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = number_end(body, i);
                tokens.push(Token::Number);
            }
            _ => {
                let symbol = [&b"..."[..], b"..", b"==", b"~=", b"<=", b">="]
                    .into_iter()
                    .find(|s| body[i..].starts_with(s))
                    .map_or(1, <[u8]>::len);
                if !b"+-*/%^#=<>(){}[];:,.~".contains(&c) {
                    return None;
                }
                tokens.push(Token::Symbol(&body[i..i + symbol]));
                i += symbol;
            }
        }
    }
    Some(tokens)
}

/// Where the number starting at `start` ends (digits, hex digits, `.`, an exponent).
fn number_end(body: &[u8], start: usize) -> usize {
    let mut i = start;
    while let Some(&b) = body.get(i) {
        let exponent_sign = matches!(b, b'+' | b'-')
            && i > start
            && matches!(body[i - 1], b'e' | b'E')
            && !body[start..].starts_with(b"0x")
            && !body[start..].starts_with(b"0X");
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || exponent_sign {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// A long bracket at `at` (`[[`, `[=[`, ...): its content (a first newline skipped, as Lua
/// does) and where it ends; `None` when `at` does not open one or it never closes.
fn long_bracket(body: &[u8], at: usize) -> Option<(&[u8], usize)> {
    if body.get(at) != Some(&b'[') {
        return None;
    }
    let level = body[at + 1..].iter().take_while(|&&b| b == b'=').count();
    if body.get(at + 1 + level) != Some(&b'[') {
        return None;
    }
    let mut start = at + 2 + level;
    if body.get(start) == Some(&b'\r') {
        start += 1;
    }
    if body.get(start) == Some(&b'\n') {
        start += 1;
    }
    let mut close = Vec::with_capacity(level + 2);
    close.push(b']');
    close.extend(std::iter::repeat_n(b'=', level));
    close.push(b']');
    let end = body[start..]
        .windows(close.len())
        .position(|w| w == close.as_slice())?;
    Some((&body[start..start + end], start + end + close.len()))
}

/// The value of the short string opening at `at` and where it ends.
fn short_string(body: &[u8], at: usize) -> Option<(Vec<u8>, usize)> {
    let quote = body[at];
    let mut value = Vec::new();
    let mut i = at + 1;
    loop {
        let c = *body.get(i)?;
        i += 1;
        match c {
            c if c == quote => return Some((value, i)),
            b'\n' => return None,
            b'\\' => {
                let e = *body.get(i)?;
                i += 1;
                let byte = match e {
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' | b'\n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'v' => 0x0b,
                    b'0'..=b'9' => {
                        let mut n = u32::from(e - b'0');
                        for _ in 0..2 {
                            match body.get(i) {
                                Some(d) if d.is_ascii_digit() => {
                                    n = n * 10 + u32::from(d - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        u8::try_from(n).ok()?
                    }
                    // Lua 5.1 keeps any other escaped character as it is (`\\`, `\"`, ...).
                    other => other,
                };
                value.push(byte);
            }
            other => value.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::literal_keys;

    fn keys(body: &str) -> Option<Vec<String>> {
        literal_keys(body.as_bytes()).map(|keys| {
            keys.iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        })
    }

    #[test]
    fn literal_keys_of_calls_are_found() {
        assert_eq!(keys(r#"return redis.call("GET", "foo")"#).unwrap(), ["foo"]);
        assert_eq!(
            keys("redis.call('SET', 'a', ARGV[1]) return redis.pcall('incr', \"b\")").unwrap(),
            ["a", "b"]
        );
        // Every key of a multi-key command, and a subcommand's key.
        assert_eq!(
            keys("return redis.call('MSET', 'k1', 'v', 'k2', ARGV[2])").unwrap(),
            ["k1", "k2"]
        );
        assert_eq!(
            keys("return redis.call('OBJECT', 'ENCODING', 'x')").unwrap(),
            ["x"]
        );
        // A movable-keys command whose arguments are all literals.
        assert_eq!(
            keys("return redis.call('ZUNIONSTORE', 'd', '2', 'a', 'b')").unwrap(),
            ["d", "a", "b"]
        );
        // A last argument that is one value: a concatenation, a parenthesised call, a number.
        assert_eq!(
            keys("return redis.call('SET', 'k', ARGV[1] .. 'y')").unwrap(),
            ["k"]
        );
        assert_eq!(keys("return redis.call('SET', 'k', (f()))").unwrap(), ["k"]);
        assert_eq!(keys("return redis.call('EXPIRE', 'k', 10)").unwrap(), ["k"]);
        // Calls in loops and functions of the script still name their literals.
        assert_eq!(
            keys("local function f() return redis.call('GET', 'x') end for i = 1, 3 do f() end")
                .unwrap(),
            ["x"]
        );
    }

    #[test]
    fn scripts_without_keys_have_none() {
        assert_eq!(keys("return 1").unwrap(), Vec::<String>::new());
        assert_eq!(
            keys("return redis.call('TIME')").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            keys("redis.call('PUBLISH', 'ch', ARGV[1]) return redis.sha1hex('x')").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            keys("#!lua flags=no-writes\nreturn 1").unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn strings_and_comments_are_read_as_lua_does() {
        assert_eq!(
            keys(r#"return redis.call('GET', "a\"b\\c\65\n")"#).unwrap(),
            ["a\"b\\cA\n"]
        );
        assert_eq!(
            keys("return redis.call('GET', [==[\nlong]]key]==])").unwrap(),
            ["long]]key"]
        );
        // Calls in comments and strings are not calls.
        assert_eq!(
            keys("-- redis.call('GET', 'no')\n--[[ redis.call('GET', 'no2') ]] return 'redis.call(1)'")
                .unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn anything_the_text_cannot_show_gives_none() {
        for body in [
            // A key computed at run time, or from KEYS / ARGV.
            "return redis.call('GET', 'a' .. 'b')",
            "return redis.call('GET', ARGV[1])",
            "local k = 'x' return redis.call('GET', k)",
            // The command itself not a literal.
            "return redis.call(ARGV[1], 'x')",
            // A last argument that may expand to several values.
            "return redis.call('DEL', unpack(ARGV))",
            "return redis.call('DEL', 'a', f())",
            "return redis.call('DEL', 'a', ...)",
            // Movable keys with a non-literal argument.
            "return redis.call('ZUNIONSTORE', 'd', ARGV[1], 'a', 'b')",
            // SORT's patterns name keys at run time.
            "return redis.call('SORT', 'l', 'BY', 'w_*')",
            // redis reached or passed around another way.
            "local c = redis.call return c('GET', 'x')",
            "return pcall(redis.call, 'GET', 'x')",
            "return redis['call']('GET', 'x')",
            "return redis:call('GET', 'x')",
            "local r = redis return r.call('GET', 'x')",
            "return _G.redis.call('GET', 'x')",
            "return loadstring('return 1')()",
            "return getfenv(1).redis.call('GET', 'x')",
            "return rawget(getmetatable(x), 'y')",
            "return redis.call 'GET'",
            // Not Lua, or a command Redis does not know.
            "return redis.call('GET', 'unterminated)",
            "return redis.call('NOSUCHCOMMAND', 'x')",
            "return redis.call('GET', 'x'",
            "redis.call('SET', 'x', function() local a, b = 1, 2 return a end)",
        ] {
            assert_eq!(keys(body), None, "{body}");
        }
    }

    /// Nested calls are each read over their own arguments: a deep nest reads in one pass.
    #[test]
    fn deeply_nested_calls_are_read() {
        let depth = 5_000;
        let body = format!(
            "return {}'v'{}",
            "redis.call('SET', 'k', ".repeat(depth),
            ", 'EX', '1')".repeat(depth)
        );
        assert_eq!(keys(&body).unwrap().len(), depth);
        let unclosed = "redis.call(".repeat(depth);
        assert_eq!(keys(&unclosed), None);
    }

    #[test]
    fn fields_named_like_forbidden_globals_are_fields() {
        assert_eq!(
            keys("local t = cjson.decode(ARGV[1]) return redis.call('GET', 'k') .. t.load")
                .unwrap(),
            ["k"]
        );
    }

    proptest::proptest! {
        /// Any body, Lua or not, gets an answer and never a panic; pieces of Lua glued at
        /// random likewise.
        #[test]
        fn any_body_is_read_without_panicking(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = literal_keys(&body);
        }

        #[test]
        fn glued_lua_pieces_are_read_without_panicking(pieces in proptest::collection::vec(0usize..14, 0..24)) {
            const PIECES: [&str; 14] = [
                "redis", ".", "call", "(", ")", "'GET'", "\"k\"", ",", "[[", "]]", "--", "[=[",
                "\\", "...",
            ];
            let body: String = pieces.iter().map(|&i| PIECES[i]).collect();
            let _ = literal_keys(body.as_bytes());
        }
    }
}
