//! The evaluation corpus: requests as raw HTTP/1.1 bytes, labelled by service and class, built
//! from a seeded generator so that every run sends the same traffic.

use std::fmt;

/// Classes of attack, the rows of the results table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attack {
    Sqli,
    Xss,
    Traversal,
    Cmdi,
    Jndi,
    Ssti,
    Crlf,
    Nosql,
    Oversized,
    Structural,
}

impl Attack {
    pub const ALL: [Attack; 10] = [
        Attack::Sqli,
        Attack::Xss,
        Attack::Traversal,
        Attack::Cmdi,
        Attack::Jndi,
        Attack::Ssti,
        Attack::Crlf,
        Attack::Nosql,
        Attack::Oversized,
        Attack::Structural,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::Sqli => "sqli",
            Attack::Xss => "xss",
            Attack::Traversal => "traversal",
            Attack::Cmdi => "command injection",
            Attack::Jndi => "jndi",
            Attack::Ssti => "ssti",
            Attack::Crlf => "crlf",
            Attack::Nosql => "nosql",
            Attack::Oversized => "oversized",
            Attack::Structural => "structural",
        }
    }
}

/// What a request is in the corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Learned from.
    Train,
    /// Benign, drawn from the training distribution.
    Benign,
    /// Benign, with new but ordinary values (new words, scripts, formats, clients).
    NewOrdinary,
    /// A classic attack.
    Attack(Attack),
    /// An injection written only with characters the target field had in training.
    ShapeFit,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Class::Train => f.write_str("training"),
            Class::Benign => f.write_str("benign, same distribution"),
            Class::NewOrdinary => f.write_str("benign, new but ordinary values"),
            Class::Attack(a) => write!(f, "attack: {}", a.name()),
            Class::ShapeFit => f.write_str("injections fitting the field's learned characters"),
        }
    }
}

/// A field attacks are placed in, with the generator of its training values.
pub type Point = (&'static str, fn(&mut Rng) -> String);

/// One request of the corpus.
#[derive(Clone, Debug)]
pub struct Sample {
    pub service: &'static str,
    pub class: Class,
    /// What the request is, for reports (`query.q: ' or 'x'='x`).
    pub what: String,
    pub req: Req,
}

/// A request before it is written out.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    /// Path and query, already encoded (or deliberately not, for structural attacks).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Req {
    pub fn get(target: impl Into<String>) -> Self {
        Req {
            method: "GET".into(),
            target: target.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn send(method: &str, target: impl Into<String>, ct: &str, body: Vec<u8>) -> Self {
        Req {
            method: method.into(),
            target: target.into(),
            headers: vec![("content-type".into(), ct.into())],
            body: Some(body),
        }
    }

    /// Sets header `k`, replacing any earlier value.
    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        self.headers.push((k.into(), v.into()));
        self
    }

    /// The bytes on the wire; `host` names `host`.
    pub fn to_bytes(&self, host: &str) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nhost: {host}\r\n",
            self.method, self.target
        );
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = &self.body {
            if !self
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
            {
                out.push_str(&format!("content-length: {}\r\n", b.len()));
            }
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if let Some(b) = &self.body {
            bytes.extend_from_slice(b);
        }
        bytes
    }
}

/// A small deterministic PRNG (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len() as u64) as usize]
    }

    pub fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from_digit(self.below(16) as u32, 16).unwrap_or('0'))
            .collect()
    }

    pub fn alnum(&mut self, len: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..len)
            .map(|_| A[self.below(A.len() as u64) as usize] as char)
            .collect()
    }

    pub fn uuid(&mut self) -> String {
        format!(
            "{}-{}-4{}-a{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(3),
            self.hex(3),
            self.hex(12)
        )
    }

    /// `n` words from `words`, joined by spaces.
    pub fn words(&mut self, words: &[&str], lo: u64, hi: u64) -> String {
        let n = self.range(lo, hi);
        (0..n)
            .map(|_| self.pick(words).to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Percent-encodes `s` for a query value or a form field (space as `+`).
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-encodes `s` for one path segment.
pub fn path_encode(s: &str) -> String {
    form_encode(s).replace('+', "%20")
}

/// `k=v&...`, encoded.
pub fn form(fields: &[(&str, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The classes of a corpus in table order.
pub fn table_classes() -> Vec<Class> {
    let mut out = vec![Class::Benign, Class::NewOrdinary];
    out.extend(Attack::ALL.iter().map(|a| Class::Attack(*a)));
    out.push(Class::ShapeFit);
    out
}
