//! The gate's view of a request and a response: plain data, parsed once, free of any HTTP stack.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use crate::rules::MediaType;

/// JSON nodes visited per body at most: a body is inspected, not walked without end.
pub const MAX_JSON_NODES: usize = 512;
/// JSON nesting followed at most; deeper nodes are reported as one `too deep` node.
pub const MAX_JSON_DEPTH: usize = 16;

/// What the gate inspects of one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    /// Method as sent (`GET`).
    pub method: String,
    /// Protocol version (`HTTP/1.1`).
    pub protocol: String,
    /// Path as sent, still percent-encoded.
    pub raw_path: String,
    /// Query parameters, percent-decoded, in order, duplicates kept.
    pub query: Vec<(String, String)>,
    /// Headers with lowercased names, in order.
    pub headers: Vec<(String, String)>,
    /// Address of the peer that connected to the gate.
    pub client_ip: Option<IpAddr>,
    /// Parsed body, when bodies are inspected and this one was read whole.
    pub body: Option<Body>,
    /// Whether the body was of an inspected type but larger than the inspection cap, and so
    /// was forwarded without inspection.
    pub body_over_cap: bool,
}

/// A request body the gate could read within its size cap.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// A JSON document.
    Json(serde_json::Value),
    /// An `application/x-www-form-urlencoded` body, decoded, or the fields of a
    /// `multipart/form-data` body (a file part as `name.filename` and `name.content-type`).
    Form(Vec<(String, String)>),
    /// A body that claims to be JSON but does not parse.
    InvalidJson,
    /// A body that claims to be `multipart/form-data` but does not parse.
    InvalidMultipart,
}

impl Request {
    /// Builds a request from its start line, headers and peer address.
    pub fn new(
        method: &str,
        protocol: &str,
        target: &str,
        headers: Vec<(String, String)>,
        client_ip: Option<IpAddr>,
    ) -> Self {
        let (raw_path, query) = match target.split_once('?') {
            Some((p, q)) => (p, parse_urlencoded(q)),
            None => (target, Vec::new()),
        };
        Request {
            method: method.to_string(),
            protocol: protocol.to_string(),
            raw_path: raw_path.to_string(),
            query,
            headers: headers
                .into_iter()
                .map(|(mut k, v)| {
                    k.make_ascii_lowercase();
                    (k, v)
                })
                .collect(),
            client_ip,
            body: None,
            body_over_cap: false,
        }
    }

    /// Makes this request what `Request::new` builds from the same parts (with header values
    /// as bytes, read as lossy UTF-8), reusing the memory it holds: the proxy keeps one sample
    /// per connection and refills it for each request instead of allocating every string anew.
    pub(crate) fn refill<'a>(
        &mut self,
        method: &str,
        protocol: &str,
        target: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        client_ip: Option<IpAddr>,
    ) {
        set(&mut self.method, method);
        set(&mut self.protocol, protocol);
        let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
        set(&mut self.raw_path, raw_path);
        refill_urlencoded(&mut self.query, query);
        refill_headers(&mut self.headers, headers);
        self.client_ip = client_ip;
        self.body = None;
        self.body_over_cap = false;
    }

    /// Bytes of memory this request holds on to, roughly: what refilling it keeps.
    pub(crate) fn retained_bytes(&self) -> usize {
        self.method.capacity()
            + self.protocol.capacity()
            + self.raw_path.capacity()
            + pairs_retained_bytes(&self.query)
            + pairs_retained_bytes(&self.headers)
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The parsed `Content-Type`, if any.
    pub fn content_type(&self) -> Option<MediaType> {
        self.header("content-type").map(MediaType::parse)
    }

    /// The declared `Content-Length`, if any and well formed.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }

    /// The last hop of `X-Forwarded-For`: the address the nearest proxy saw.
    pub fn forwarded_hop(&self) -> Option<IpAddr> {
        let all = self.headers.iter().rfind(|(k, _)| k == "x-forwarded-for")?;
        all.1.rsplit(',').next()?.trim().parse().ok()
    }

    /// The path, percent-decoded.
    pub fn path(&self) -> String {
        percent_decode(&self.raw_path, false)
    }

    /// Whether the body should be read for inspection, judging by its content type.
    pub fn wants_body(&self) -> bool {
        body_kind(self.content_type().as_ref()).is_some()
    }

    /// Parses `bytes` as the body according to the content type and attaches it.
    pub fn attach_body(&mut self, bytes: &[u8]) {
        self.body = match body_kind(self.content_type().as_ref()) {
            Some(BodyKind::Json) => Some(
                serde_json::from_slice(bytes)
                    .map(Body::Json)
                    .unwrap_or(Body::InvalidJson),
            ),
            Some(BodyKind::Form) => Some(Body::Form(parse_urlencoded(&String::from_utf8_lossy(
                bytes,
            )))),
            Some(BodyKind::Multipart(boundary)) => Some(
                parse_multipart(bytes, &boundary)
                    .map(Body::Form)
                    .unwrap_or(Body::InvalidMultipart),
            ),
            None => None,
        };
    }
}

fn set(out: &mut String, s: &str) {
    out.clear();
    out.push_str(s);
}

/// Replaces `out` with decoded `s`, in the memory `out` already holds.
fn set_decoded(out: &mut String, s: &str, plus_is_space: bool) {
    if !needs_decoding(s, plus_is_space) {
        return set(out, s);
    }
    let mut buf = std::mem::take(out).into_bytes();
    buf.clear();
    decode_into(s.as_bytes(), plus_is_space, &mut buf);
    *out = into_text(buf);
}

/// Makes `out` the headers `Request::new` keeps of `headers` (lowercased names, values read as
/// lossy UTF-8), reusing the strings already in `out`.
pub(crate) fn refill_headers<'a>(
    out: &mut Vec<(String, String)>,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) {
    let mut n = 0;
    for (name, value) in headers {
        if n == out.len() {
            out.push(Default::default());
        }
        let (k, v) = &mut out[n];
        set(k, name);
        k.make_ascii_lowercase();
        match std::str::from_utf8(value) {
            Ok(text) => set(v, text),
            Err(_) => set(v, &String::from_utf8_lossy(value)),
        }
        n += 1;
    }
    out.truncate(n);
}

pub(crate) fn pairs_retained_bytes(pairs: &[(String, String)]) -> usize {
    pairs
        .iter()
        .map(|(k, v)| k.capacity() + v.capacity())
        .sum::<usize>()
        + std::mem::size_of_val(pairs)
}

enum BodyKind {
    Json,
    Form,
    Multipart(String),
}

fn body_kind(media: Option<&MediaType>) -> Option<BodyKind> {
    let essence = &media?.essence;
    if essence == "application/json" || essence.ends_with("+json") {
        Some(BodyKind::Json)
    } else if essence == "application/x-www-form-urlencoded" {
        Some(BodyKind::Form)
    } else if essence == "multipart/form-data" {
        let media = media?;
        let boundary = media.params.iter().find(|(k, _)| k == "boundary")?;
        Some(BodyKind::Multipart(boundary.1.clone()))
    } else {
        None
    }
}

/// Parts of a multipart body looked at; the rest is ignored.
pub const MAX_MULTIPART_PARTS: usize = 64;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses a `multipart/form-data` body into fields: a plain part as its name and text, a file
/// part as `name.filename` and `name.content-type` (file contents are not profiled). `None`
/// when the body does not follow the format.
pub fn parse_multipart(bytes: &[u8], boundary: &str) -> Option<Vec<(String, String)>> {
    if boundary.is_empty() || boundary.len() > 70 {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let next_part = format!("\r\n{delimiter}");
    let mut rest = &bytes[find(bytes, delimiter.as_bytes())? + delimiter.len()..];
    let mut fields = Vec::new();
    for _ in 0..MAX_MULTIPART_PARTS {
        if rest.starts_with(b"--") {
            return Some(fields);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let end = find(rest, next_part.as_bytes())?;
        let part = &rest[..end];
        rest = &rest[end + next_part.len()..];
        let head_end = find(part, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&part[..head_end]);
        let content = &part[head_end + 4..];
        let (mut name, mut filename, mut content_type) = (None, None, None);
        for line in head.split("\r\n") {
            let (k, v) = line.split_once(':')?;
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                let media = MediaType::parse(v);
                for (pk, pv) in media.params {
                    match pk.as_str() {
                        "name" => name = Some(pv),
                        "filename" => filename = Some(pv),
                        _ => {}
                    }
                }
            } else if k.trim().eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim().to_string());
            }
        }
        let name = name?;
        match filename {
            Some(f) => {
                fields.push((format!("{name}.filename"), f));
                if let Some(ct) = content_type {
                    fields.push((format!("{name}.content-type"), ct));
                }
            }
            None => fields.push((name, String::from_utf8_lossy(content).into_owned())),
        }
    }
    Some(fields)
}

/// What the gate inspects of one response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers with lowercased names, in order.
    pub headers: Vec<(String, String)>,
    /// Time from forwarding the request to receiving the response head.
    pub elapsed: Duration,
}

impl Response {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The kind of a JSON node, one bit each in a learned kind set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonKind {
    /// `null`
    Null = 0,
    /// `true` or `false`
    Bool = 1,
    /// a number
    Number = 2,
    /// a string
    String = 3,
    /// an array
    Array = 4,
    /// an object
    Object = 5,
}

impl JsonKind {
    /// The kind's name in reasons.
    pub fn name(self) -> &'static str {
        match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "bool",
            JsonKind::Number => "number",
            JsonKind::String => "string",
            JsonKind::Array => "array",
            JsonKind::Object => "object",
        }
    }

    pub(crate) const ALL: [JsonKind; 6] = [
        JsonKind::Null,
        JsonKind::Bool,
        JsonKind::Number,
        JsonKind::String,
        JsonKind::Array,
        JsonKind::Object,
    ];
}

/// One node of a JSON body, flattened: its path (`user.tags[]`), kind, and scalar text or
/// item count.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonNode {
    /// Dotted path from the root; `[]` stands for any array element; the root is `$`.
    pub path: String,
    /// Kind of the node.
    pub kind: JsonKind,
    /// Text of a string or number leaf.
    pub text: Option<String>,
    /// Number of items or members of an array or object.
    pub items: Option<u64>,
}

/// Flattens a JSON document into at most `MAX_JSON_NODES` nodes, depth first. Returns the
/// nodes and whether the document was cut short.
pub fn flatten_json(value: &serde_json::Value) -> (Vec<JsonNode>, bool) {
    let mut nodes = Vec::new();
    let mut truncated = false;
    walk(value, "$".to_string(), 0, &mut nodes, &mut truncated);
    (nodes, truncated)
}

fn walk(
    value: &serde_json::Value,
    path: String,
    depth: usize,
    nodes: &mut Vec<JsonNode>,
    truncated: &mut bool,
) {
    use serde_json::Value;
    if nodes.len() >= MAX_JSON_NODES || depth > MAX_JSON_DEPTH {
        *truncated = true;
        return;
    }
    let (kind, text, items) = match value {
        Value::Null => (JsonKind::Null, None, None),
        Value::Bool(_) => (JsonKind::Bool, None, None),
        Value::Number(n) => (JsonKind::Number, Some(n.to_string()), None),
        Value::String(s) => (JsonKind::String, Some(s.clone()), None),
        Value::Array(a) => (JsonKind::Array, None, Some(a.len() as u64)),
        Value::Object(o) => (JsonKind::Object, None, Some(o.len() as u64)),
    };
    nodes.push(JsonNode {
        path: path.clone(),
        kind,
        text,
        items,
    });
    match value {
        Value::Array(a) => {
            for item in a {
                walk(item, format!("{path}[]"), depth + 1, nodes, truncated);
            }
        }
        Value::Object(o) => {
            for (k, v) in o {
                walk(v, format!("{path}.{k}"), depth + 1, nodes, truncated);
            }
        }
        _ => {}
    }
}

/// Decodes `%XX` escapes (and `+` as space in form encoding); bytes that are not UTF-8 are
/// replaced, which the non-ASCII count then sees.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    percent_decode_cow(s, plus_is_space).into_owned()
}

/// `percent_decode`, borrowing `s` when there is nothing to decode (most paths and values).
pub(crate) fn percent_decode_cow(s: &str, plus_is_space: bool) -> Cow<'_, str> {
    if !needs_decoding(s, plus_is_space) {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    decode_into(s.as_bytes(), plus_is_space, &mut out);
    Cow::Owned(into_text(out))
}

fn needs_decoding(s: &str, plus_is_space: bool) -> bool {
    s.bytes().any(|b| b == b'%' || (plus_is_space && b == b'+'))
}

fn decode_into(bytes: &[u8], plus_is_space: bool, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
}

/// Decoded bytes as text; bytes that are not UTF-8 are replaced.
fn into_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Parses `a=1&b=2` into decoded pairs; a key without `=` has an empty value.
pub fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    refill_urlencoded(&mut pairs, s);
    pairs
}

/// Makes `out` what `parse_urlencoded(s)` returns, reusing the strings already in `out`.
fn refill_urlencoded(out: &mut Vec<(String, String)>, s: &str) {
    let mut n = 0;
    for p in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if n == out.len() {
            out.push(Default::default());
        }
        let (key, value) = &mut out[n];
        set_decoded(key, k, true);
        set_decoded(value, v, true);
        n += 1;
    }
    out.truncate(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_split_and_decoded() {
        let r = Request::new("GET", "HTTP/1.1", "/a%20b?x=1&y=a+b%21&z", vec![], None);
        assert_eq!(r.raw_path, "/a%20b");
        assert_eq!(r.path(), "/a b");
        assert_eq!(
            r.query,
            vec![
                ("x".into(), "1".into()),
                ("y".into(), "a b!".into()),
                ("z".into(), "".into())
            ]
        );
    }

    #[test]
    fn refilled_requests_equal_new_ones() {
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            &'a [(&'a str, &'a [u8])],
            Option<&'a str>,
        );
        let cases: [Case; 5] = [
            (
                "GET",
                "HTTP/1.1",
                "/search?q=red+shoes&page=2&x",
                &[("host", b"a.test"), ("User-Agent", b"curl/8.5.0")],
                Some("10.0.0.5"),
            ),
            ("POST", "HTTP/1.0", "/a%20b", &[], None),
            (
                "GET",
                "HTTP/1.1",
                "/?a=%zz&=1&&b=%C3%A9",
                &[
                    ("x-bin", b"\xff\xfeok"),
                    ("accept", b"*/*"),
                    ("ACCEPT", b""),
                ],
                Some("::1"),
            ),
            ("GET", "HTTP/1.1", "/?", &[("host", b"h")], None),
            (
                "DELETE",
                "HTTP/1.1",
                "/users/42/orders?sort=asc",
                &[],
                Some("10.1.2.3"),
            ),
        ];
        let mut reused = Request::default();
        // Each case refills the same request, after others left more or fewer strings in it.
        for round in 0..2 {
            for (method, protocol, target, headers, ip) in cases {
                let ip = ip.map(|a| a.parse().unwrap());
                let pairs = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
                    .collect();
                let expected = Request::new(method, protocol, target, pairs, ip);
                reused.body = Some(Body::InvalidJson);
                reused.body_over_cap = true;
                reused.refill(method, protocol, target, headers.iter().copied(), ip);
                assert_eq!(reused, expected, "round {round}, {target}");
            }
        }
        assert!(reused.retained_bytes() > 0);
    }

    #[test]
    fn percent_decode_keeps_broken_escapes() {
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("%2e%2E/", false), "../");
    }

    #[test]
    fn forwarded_hop_is_the_last_address() {
        let r = Request::new(
            "GET",
            "HTTP/1.1",
            "/",
            vec![("X-Forwarded-For".into(), "1.2.3.4, 10.0.0.7".into())],
            None,
        );
        assert_eq!(r.forwarded_hop(), Some("10.0.0.7".parse().unwrap()));
    }

    #[test]
    fn json_is_flattened_with_bounds() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"user":{"name":"a","tags":["x","y"]},"n":1}"#).unwrap();
        let (nodes, truncated) = flatten_json(&v);
        assert!(!truncated);
        let paths: Vec<_> = nodes.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "$",
                "$.n",
                "$.user",
                "$.user.name",
                "$.user.tags",
                "$.user.tags[]",
                "$.user.tags[]"
            ]
        );
        let big = serde_json::Value::Array(vec![serde_json::Value::Null; MAX_JSON_NODES + 5]);
        let (nodes, truncated) = flatten_json(&big);
        assert!(truncated);
        assert_eq!(nodes.len(), MAX_JSON_NODES);
    }

    #[test]
    fn bodies_parse_by_content_type() {
        let mut r = Request::new(
            "POST",
            "HTTP/1.1",
            "/",
            vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            None,
        );
        assert!(r.wants_body());
        r.attach_body(b"a=1&b=x%20y");
        assert_eq!(
            r.body,
            Some(Body::Form(vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into())
            ]))
        );
        let mut r = Request::new(
            "POST",
            "HTTP/1.1",
            "/",
            vec![("content-type".into(), "application/json".into())],
            None,
        );
        r.attach_body(b"{not json");
        assert_eq!(r.body, Some(Body::InvalidJson));
    }

    #[test]
    fn multipart_fields_and_files_are_parsed() {
        let mut r = Request::new(
            "POST",
            "HTTP/1.1",
            "/upload",
            vec![(
                "content-type".into(),
                "multipart/form-data; boundary=XyZ".into(),
            )],
            None,
        );
        assert!(r.wants_body());
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nanna 7\r\n--XyZ\r\nContent-Disposition: form-data; name=\"avatar\"; filename=\"me.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff\r\n--XyZ--\r\n";
        r.attach_body(body);
        assert_eq!(
            r.body,
            Some(Body::Form(vec![
                ("user".into(), "anna 7".into()),
                ("avatar.filename".into(), "me.jpg".into()),
                ("avatar.content-type".into(), "image/jpeg".into()),
            ]))
        );
        r.attach_body(b"--XyZ\r\nno headers here--XyZ--");
        assert_eq!(r.body, Some(Body::InvalidMultipart));
    }
}
