//! What a value does in the grammars attackers target (SQL, HTML/JS, shell, templates,
//! LDAP/JNDI lookups, file paths): small tokenisers that report *structures* (a quote closed
//! and followed by a condition, a tag, a command after a separator, ...) as bits. A field
//! learns the structures its normal values have; a value with a structure its field never had
//! breaks the rules, whatever characters it is made of.

/// One bit per structure, in the order of `NAMES`.
pub const SQL_QUOTE_CONDITION: u32 = 1 << 0;
pub const SQL_QUOTE_COMMENT: u32 = 1 << 1;
pub const SQL_UNION_SELECT: u32 = 1 << 2;
pub const SQL_STACKED: u32 = 1 << 3;
pub const SQL_COMMENT_BLOCK: u32 = 1 << 4;
pub const SQL_TAUTOLOGY: u32 = 1 << 5;
pub const HTML_TAG: u32 = 1 << 6;
pub const HTML_HANDLER: u32 = 1 << 7;
pub const JS_SCHEME: u32 = 1 << 8;
pub const JS_SINK: u32 = 1 << 9;
pub const SHELL_COMMAND: u32 = 1 << 10;
pub const SHELL_SUBSTITUTION: u32 = 1 << 11;
pub const TEMPLATE: u32 = 1 << 12;
pub const LOOKUP: u32 = 1 << 13;
pub const LDAP_FILTER: u32 = 1 << 14;
pub const PATH_PARENT: u32 = 1 << 15;
pub const PATH_SYSTEM: u32 = 1 << 16;
pub const NOSQL_OPERATOR: u32 = 1 << 17;
pub const ENCODED_LINE_BREAK: u32 = 1 << 18;

/// The name of each structure bit, as reasons show it.
pub const NAMES: [&str; 19] = [
    "sql: quote closed then a condition",
    "sql: quote closed then a comment",
    "sql: union select",
    "sql or script: statement after ';'",
    "sql: comment block",
    "sql: condition on a number, constant or function",
    "html: tag",
    "html: event handler attribute",
    "js: script url scheme",
    "js: call of a script sink",
    "shell: command after a separator",
    "shell: command substitution",
    "template: expression",
    "lookup: ${...:...} expression (jndi, env)",
    "ldap: filter injection",
    "path: parent directory",
    "path: system file",
    "nosql: query operator",
    "crlf: encoded line break",
];

/// The names of the structures in `bits`.
pub fn names(bits: u32) -> impl Iterator<Item = &'static str> {
    NAMES
        .iter()
        .enumerate()
        .filter(move |(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| *n)
}

/// Bytes whose presence makes a value worth tokenising; a value without any of them (and
/// without spaces) has no structure in these grammars.
const fn is_trigger(b: u8) -> bool {
    matches!(
        b,
        b'\''
            | b'"'
            | b'<'
            | b'>'
            | b';'
            | b'|'
            | b'&'
            | b'$'
            | b'`'
            | b'{'
            | b'}'
            | b'('
            | b')'
            | b'/'
            | b'\\'
            | b'%'
            | b'='
            | b'#'
            | b'*'
            | b'-'
            | b'.'
            | b' '
            | b':'
    )
}

/// The structures of `value`.
pub fn structures(value: &str) -> u32 {
    let mut has = 0u32;
    for b in value.bytes() {
        has |= PRESENCE[usize::from(b)];
    }
    // SQL needs no punctuation to be SQL: `shoes union select password from users`.
    let keywords =
        has & P_SPACE != 0 && (contains_ci(value, b"union") || contains_ci(value, b"select"));
    if has & !P_SPACE == 0 && !keywords {
        return 0;
    }
    // Lowercased on the stack when short, as most values are: no allocation per value.
    let mut buf = [0u8; LOWERED_ON_STACK];
    let owned: String;
    let s = match lowered(value, &mut buf) {
        Some(s) => s,
        None => {
            owned = value.to_ascii_lowercase();
            owned.as_str()
        }
    };
    // The path, lookup and encoding patterns, and the script sinks: one pass for both
    // scanners that need them.
    let delimiters = if has & (P_PAREN | P_DOT | P_PERCENT | P_SLASH | P_COLON | P_DOLLAR) != 0 {
        delimited(s)
    } else {
        0
    };
    let mut bits = 0;
    if keywords || has & (P_QUOTE | P_SEMI | P_EQ | P_LT | P_PAREN | P_STAR) != 0 {
        bits |= sql(s);
    }
    if has & (P_LT | P_EQ | P_COLON | P_PAREN | P_DOT | P_QUOTE) != 0 {
        bits |= markup(s, has, delimiters);
    }
    if has & (P_SEMI | P_PIPE | P_QUOTE | P_DOLLAR) != 0 {
        bits |= shell(s);
    }
    bits | other(s, has, delimiters)
}

/// Longest value lowercased in a buffer on the stack.
const LOWERED_ON_STACK: usize = 256;

/// `value` in ASCII lowercase, written into `buf`; `None` when it does not fit.
fn lowered<'b>(value: &str, buf: &'b mut [u8; LOWERED_ON_STACK]) -> Option<&'b str> {
    let out = buf.get_mut(..value.len())?;
    out.copy_from_slice(value.as_bytes());
    out.make_ascii_lowercase();
    // Lowercasing ASCII letters keeps the text valid UTF-8; the check cannot fail.
    std::str::from_utf8(out).ok()
}

fn contains_ci(value: &str, word: &[u8]) -> bool {
    let b = value.as_bytes();
    b.iter().enumerate().any(|(i, c)| {
        c.to_ascii_lowercase() == word[0]
            && b.get(i..i + word.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
    })
}

/// Which characters of the grammars a value has, one bit per group, so that each scanner
/// runs only on values that can hold its structures.
const P_QUOTE: u32 = 1 << 0;
const P_SEMI: u32 = 1 << 1;
const P_PIPE: u32 = 1 << 2;
const P_DOLLAR: u32 = 1 << 3;
const P_BRACE: u32 = 1 << 4;
const P_LT: u32 = 1 << 5;
const P_PAREN: u32 = 1 << 6;
const P_EQ: u32 = 1 << 7;
const P_DOT: u32 = 1 << 8;
const P_SLASH: u32 = 1 << 9;
const P_PERCENT: u32 = 1 << 10;
const P_COLON: u32 = 1 << 11;
const P_STAR: u32 = 1 << 12;
const P_SPACE: u32 = 1 << 13;

const fn presence(b: u8) -> u32 {
    match b {
        b'\'' | b'"' | b'`' => P_QUOTE,
        b';' => P_SEMI,
        b'|' | b'&' | b'\n' => P_PIPE,
        b'$' => P_DOLLAR,
        b'{' | b'}' => P_BRACE,
        b'<' | b'>' => P_LT,
        b'(' | b')' => P_PAREN,
        b'=' => P_EQ,
        b'.' => P_DOT,
        b'/' | b'\\' => P_SLASH,
        b'%' => P_PERCENT,
        b':' => P_COLON,
        b'*' | b'#' | b'-' => P_STAR,
        _ => P_SPACE,
    }
}

/// `presence` of each byte that is a trigger or a line break, zero for the others.
const PRESENCE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if is_trigger(c) || c == b'\n' {
            t[b] = presence(c);
        }
        b += 1;
    }
    t
};

/// A SQL token, as far as the patterns below need one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Num,
    Quote,
    Op,
    Open,
    Close,
    Semi,
    Comment,
    Other,
}

fn sql_tokens(s: &str) -> Vec<Tok<'_>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        i += 1;
        let tok = match c {
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            b'\'' | b'"' | b'`' => {
                // An apostrophe inside a word (`don't`) is no quote.
                let inside = start > 0
                    && b[start - 1].is_ascii_alphabetic()
                    && b.get(i).is_some_and(|n| n.is_ascii_alphabetic());
                if inside && c == b'\'' {
                    Tok::Other
                } else {
                    Tok::Quote
                }
            }
            b'-' if b.get(i) == Some(&b'-') => {
                i += 1;
                Tok::Comment
            }
            b'#' => Tok::Comment,
            b'/' if b.get(i) == Some(&b'*') => {
                i += 1;
                Tok::Comment
            }
            b'=' | b'<' | b'>' | b'!' | b'|' | b'&' | b'+' | b'*' | b'/' | b'-' | b'%' => {
                while i < b.len() && matches!(b[i], b'=' | b'<' | b'>' | b'|' | b'&') {
                    i += 1;
                }
                Tok::Op
            }
            b'(' => Tok::Open,
            b')' => Tok::Close,
            b';' => Tok::Semi,
            b'0'..=b'9' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                Tok::Num
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'@' => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'@' | b'$'))
                {
                    i += 1;
                }
                Tok::Word(&s[start..i])
            }
            _ => Tok::Other,
        };
        out.push(tok);
    }
    out
}

const LOGIC: &[&str] = &[
    "or",
    "and",
    "xor",
    "union",
    "having",
    "like",
    "rlike",
    "regexp",
    "order",
    "group",
    "limit",
    "procedure",
    "into",
    "between",
    "is",
    "in",
    "not",
    "div",
    "waitfor",
];
const LITERAL_WORDS: &[&str] = &[
    "select",
    "null",
    "true",
    "false",
    "by",
    "all",
    "version",
    "user",
    "database",
    "current_user",
    "@@version",
    "sleep",
    "benchmark",
    "delay",
];
/// Functions injected conditions call: delays, error-based extraction, conversions.
const SQL_FUNCTIONS: &[&str] = &[
    "sleep",
    "pg_sleep",
    "benchmark",
    "extractvalue",
    "updatexml",
    "convert",
    "cast",
    "ascii",
    "substring",
    "substr",
    "char",
    "concat",
    "load_file",
    "version",
    "database",
    "user",
    "length",
    "if",
    "exists",
];
const STATEMENTS: &[&str] = &[
    "drop", "delete", "insert", "update", "select", "exec", "execute", "shutdown", "declare",
    "create", "alter", "truncate", "waitfor", "return",
];

fn sql(s: &str) -> u32 {
    let t = sql_tokens(s);
    let mut bits = 0;
    let skip = |mut j: usize| {
        while matches!(t.get(j), Some(Tok::Open | Tok::Close)) {
            j += 1;
        }
        j
    };
    let literal_at = |j: usize| match t.get(j) {
        Some(Tok::Quote | Tok::Num) => true,
        Some(Tok::Word(w)) => LITERAL_WORDS.contains(w) || t.get(j + 1) == Some(&Tok::Open),
        _ => false,
    };
    for i in 0..t.len() {
        match t[i] {
            Tok::Quote => {
                let j = skip(i + 1);
                match t.get(j) {
                    Some(Tok::Word(w)) if LOGIC.contains(w) && literal_at(skip(j + 1)) => {
                        bits |= SQL_QUOTE_CONDITION
                    }
                    Some(Tok::Op) if literal_at(skip(j + 1)) => bits |= SQL_QUOTE_CONDITION,
                    Some(Tok::Comment) => bits |= SQL_QUOTE_COMMENT,
                    Some(Tok::Semi) => {
                        if matches!(t.get(j + 1), Some(Tok::Word(w)) if STATEMENTS.contains(w)) {
                            bits |= SQL_STACKED;
                        }
                    }
                    _ => {}
                }
            }
            Tok::Word("union") => {
                let j = if t.get(i + 1) == Some(&Tok::Word("all")) {
                    i + 2
                } else {
                    i + 1
                };
                if t.get(skip(j)) == Some(&Tok::Word("select")) {
                    bits |= SQL_UNION_SELECT;
                }
            }
            Tok::Word("select") if i > 0 && t[i - 1] == Tok::Open => bits |= SQL_UNION_SELECT,
            Tok::Semi
                if matches!(t.get(i + 1), Some(Tok::Word(w)) if STATEMENTS.contains(w))
                    && t.get(i + 2).is_some() =>
            {
                bits |= SQL_STACKED;
            }
            Tok::Word("or" | "and" | "xor" | "having" | "where") => {
                // `or 1=1`, `and 2>1`, `or true`, `and 1=convert(...)`
                let j = skip(i + 1);
                match (t.get(j), t.get(j + 1)) {
                    (Some(Tok::Num | Tok::Quote), Some(Tok::Op)) if literal_at(skip(j + 2)) => {
                        bits |= SQL_TAUTOLOGY
                    }
                    (Some(Tok::Word("true")), _) => bits |= SQL_TAUTOLOGY,
                    (Some(Tok::Word(w)), Some(Tok::Open)) if SQL_FUNCTIONS.contains(w) => {
                        bits |= SQL_TAUTOLOGY
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if let Some(open) = s.find("/*") {
        if s[open + 2..].contains("*/") {
            bits |= SQL_COMMENT_BLOCK;
        }
    }
    bits
}

/// Functions a script payload calls, found before `(` or a backtick.
const SINK_CALLS: &[&str] = &[
    "alert",
    "prompt",
    "confirm",
    "eval",
    "fetch",
    "settimeout",
    "setinterval",
    "import",
];
/// Patterns that start at a delimiter, with the structure each marks, those with the same
/// first byte together; `delimited` finds them all in one pass over a value.
const DELIMITED: &[(&str, u32)] = &[
    (".cookie", JS_SINK),
    (".domain", JS_SINK),
    (".write(", JS_SINK),
    (".location", JS_SINK),
    (".innerhtml", JS_SINK),
    (".fromcharcode", JS_SINK),
    ("../", PATH_PARENT),
    ("..\\", PATH_PARENT),
    ("..%2f", PATH_PARENT),
    ("..%5c", PATH_PARENT),
    (".%2e/", PATH_PARENT),
    (".ini", PATH_SYSTEM),
    (".ssh/", PATH_SYSTEM),
    (".htaccess", PATH_SYSTEM),
    (")(", LDAP_FILTER),
    ("(|(", LDAP_FILTER),
    ("(&(", LDAP_FILTER),
    ("(!(", LDAP_FILTER),
    ("/..", PATH_PARENT),
    ("/etc/", PATH_SYSTEM),
    ("/etc%2f", PATH_SYSTEM),
    ("/proc/", PATH_SYSTEM),
    ("/bin/", PATH_SYSTEM),
    ("/dev/tcp", PATH_SYSTEM),
    ("/usr/bin", PATH_SYSTEM),
    ("/var/log/", PATH_SYSTEM),
    ("/root/", PATH_SYSTEM),
    ("\\..", PATH_PARENT),
    ("\\windows\\", PATH_SYSTEM),
    ("\\r\\n", ENCODED_LINE_BREAK),
    ("\\u000d", ENCODED_LINE_BREAK),
    ("\\u000a", ENCODED_LINE_BREAK),
    ("%2e%2e", PATH_PARENT),
    ("%2e./", PATH_PARENT),
    ("%0d", ENCODED_LINE_BREAK),
    ("%0a", ENCODED_LINE_BREAK),
    (":\\windows", PATH_SYSTEM),
    ("$ne", NOSQL_OPERATOR),
    ("$gt", NOSQL_OPERATOR),
    ("$lt", NOSQL_OPERATOR),
    ("$regex", NOSQL_OPERATOR),
    ("$where", NOSQL_OPERATOR),
    ("$in", NOSQL_OPERATOR),
    ("$nin", NOSQL_OPERATOR),
    ("$exists", NOSQL_OPERATOR),
    ("$or", NOSQL_OPERATOR),
    ("$and", NOSQL_OPERATOR),
    ("$expr", NOSQL_OPERATOR),
    ("$function", NOSQL_OPERATOR),
    ("$eq", NOSQL_OPERATOR),
];

/// For each ASCII byte, the range of `DELIMITED` whose patterns start with it (empty for the
/// bytes none starts with).
const DELIMITER_RANGE: [(u8, u8); 128] = {
    let mut t = [(0u8, 0u8); 128];
    let mut i = 0;
    while i < DELIMITED.len() {
        let first = DELIMITED[i].0.as_bytes()[0] as usize;
        let (start, end) = t[first];
        if end == 0 {
            t[first] = (i as u8, i as u8 + 1);
        } else if end as usize == i {
            t[first] = (start, end + 1);
        } else {
            panic!("DELIMITED: patterns with the same first byte must be together");
        }
        i += 1;
    }
    t
};

/// The structures of `DELIMITED` in `s`: one pass, comparing only the patterns that start
/// with the byte at hand.
fn delimited(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut bits = 0;
    for i in 0..b.len() {
        let Some(&(start, end)) = DELIMITER_RANGE.get(usize::from(b[i])) else {
            continue;
        };
        let group = &DELIMITED[usize::from(start)..usize::from(end)];
        let rest = &b[i..];
        for (p, bit) in group {
            let p = p.as_bytes();
            // The second byte inline: most delimiters in ordinary text are followed by
            // something no pattern has.
            if rest.get(1) == p.get(1) && rest.starts_with(p) {
                bits |= bit;
            }
        }
    }
    bits
}

/// `delimiters` is `delimited(s)`, computed whenever `has` holds `P_DOT`.
fn markup(s: &str, has: u32, delimiters: u32) -> u32 {
    let b = s.as_bytes();
    let mut bits = 0;
    // Searched only when the value has the character: a searcher built for nothing
    // costs more than the rest of the scan.
    if has & P_LT != 0 {
        for (i, _) in s.match_indices('<') {
            let mut j = i + 1;
            if b.get(j) == Some(&b'/') || b.get(j) == Some(&b'!') {
                j += 1;
            }
            let name_start = j;
            while b.get(j).is_some_and(|c| c.is_ascii_alphanumeric()) {
                j += 1;
            }
            let named = j > name_start && b[name_start].is_ascii_alphabetic();
            if named
                && b.get(j)
                    .is_none_or(|c| matches!(c, b' ' | b'/' | b'>' | b'\t' | b'\n'))
            {
                bits |= HTML_TAG;
            }
        }
    }
    if has & P_EQ != 0 {
        for (i, _) in s.match_indices("on") {
            if i > 0 && b[i - 1].is_ascii_alphanumeric() {
                continue;
            }
            let mut j = i + 2;
            while b.get(j).is_some_and(|c| c.is_ascii_alphabetic()) {
                j += 1;
            }
            let letters = j - i - 2;
            while b.get(j) == Some(&b' ') {
                j += 1;
            }
            if letters >= 3 && b.get(j) == Some(&b'=') {
                bits |= HTML_HANDLER;
            }
        }
    }
    let scheme = |i: usize| {
        let before = &s[..i];
        ["javascript", "vbscript", "livescript"]
            .iter()
            .any(|w| before.ends_with(w))
            || (before.ends_with("data") && s[i..].starts_with(":text/html"))
    };
    if has & P_COLON != 0 && s.match_indices(':').any(|(i, _)| scheme(i)) {
        bits |= JS_SCHEME;
    }
    let call = |i: usize| SINK_CALLS.iter().any(|w| s[..i].ends_with(w));
    if (has & (P_PAREN | P_QUOTE) != 0 && s.match_indices(['(', '`']).any(|(i, _)| call(i)))
        || (has & P_DOT != 0 && delimiters & JS_SINK != 0)
    {
        bits |= JS_SINK;
    }
    bits
}

/// Commands that are no ordinary word: after a separator they are a command.
const COMMANDS: &[&str] = &[
    "id",
    "whoami",
    "uname",
    "wget",
    "curl",
    "nc",
    "ncat",
    "netcat",
    "bash",
    "sh",
    "zsh",
    "dash",
    "python",
    "python3",
    "perl",
    "php",
    "ruby",
    "powershell",
    "cmd",
    "nslookup",
    "telnet",
    "chmod",
    "rm",
    "base64",
    "mkfifo",
    "ifconfig",
    "systeminfo",
    "xp_cmdshell",
    "passwd",
    "busybox",
    "tftp",
    "ls",
];
/// Commands that are ordinary words too: a command only with an argument like `-x` or `/x`.
const WORD_COMMANDS: &[&str] = &[
    "cat", "sleep", "ping", "echo", "find", "head", "tail", "more", "less", "kill", "touch", "env",
    "type", "dir", "net", "ps",
];

fn shell(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut bits = 0;
    for (i, &c) in b.iter().enumerate() {
        let after = match c {
            b';' | b'|' | b'&' | b'\n' | b'`' => i + 1,
            b'$' if b.get(i + 1) == Some(&b'(') => {
                bits |= SHELL_SUBSTITUTION;
                i + 2
            }
            _ => continue,
        };
        let mut j = after;
        while b
            .get(j)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'|' | b'&'))
        {
            j += 1;
        }
        let start = j;
        while b
            .get(j)
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'/' | b'.'))
        {
            j += 1;
        }
        let word = &s[start..j];
        let base = word.rsplit('/').next().unwrap_or(word);
        let mut k = j;
        while b.get(k) == Some(&b' ') {
            k += 1;
        }
        let argument = k > j
            && b.get(k)
                .is_some_and(|c| matches!(c, b'-' | b'/' | b'0'..=b'9'));
        let ends = b
            .get(j)
            .is_none_or(|c| matches!(c, b' ' | b';' | b'|' | b'&' | b'`' | b')'));
        if ends && (COMMANDS.contains(&base) || (WORD_COMMANDS.contains(&base) && argument)) {
            bits |= SHELL_COMMAND;
        }
    }
    if let Some(open) = s.find('`') {
        if s[open + 1..].find('`').is_some_and(|n| n > 0) {
            bits |= SHELL_SUBSTITUTION;
        }
    }
    bits
}

fn closes(s: &str, open: &str, close: &str) -> bool {
    s.match_indices(open)
        .any(|(i, _)| s[i + open.len()..].contains(close))
}

/// `delimiters` is `delimited(s)`, computed whenever `has` holds one of the groups it needs.
fn other(s: &str, has: u32, delimiters: u32) -> u32 {
    let mut bits = 0;
    if has & (P_BRACE | P_PERCENT) != 0
        && (closes(s, "{{", "}}")
            || closes(s, "{%", "%}")
            || closes(s, "${", "}")
            || closes(s, "#{", "}")
            || closes(s, "*{", "}")
            || closes(s, "<%", "%>"))
    {
        bits |= TEMPLATE;
    }
    if has & P_DOLLAR != 0
        && s.match_indices("${").any(|(i, _)| {
            let rest = &s[i + 2..];
            // Bytes, not a `str` slice: the 48th byte may fall inside a character.
            let end = rest.find('}').unwrap_or(rest.len()).min(48);
            rest.as_bytes()[..end].contains(&b':') || rest.starts_with("${")
        })
    {
        bits |= LOOKUP;
    }
    if has & (P_PAREN | P_DOT | P_PERCENT | P_SLASH | P_COLON | P_DOLLAR) != 0 {
        bits |= delimiters & !JS_SINK;
    }
    if s == ".." {
        bits |= PATH_PARENT;
    }
    if has & P_COLON != 0 && s.as_bytes().windows(6).any(|w| w == b"file:/") {
        bits |= PATH_SYSTEM;
    }
    bits
}

#[cfg(test)]
#[path = "grammar_tests.rs"]
mod tests;
