//! The decision: a pure function of a profile and a request (or response) that lists every
//! rule the request breaks.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::path::PathSample;
use crate::profile::{json_key, json_sample, length_bucket, Profile};
use crate::request::{flatten_json, Body, Request, Response};
use crate::rules::{
    network_of, printable, with_network, KeyedRules, MediaRule, MediaType, Rule, MAX_KEY_LEN,
};
use crate::value::{decompress_max, ValueProfile, ValueSample};

/// Reasons kept per decision: enough to act on, bounded so an event stays small.
pub const MAX_REASONS: usize = 24;

/// The outcome of checking a request or response against a profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Every rule broken, as `where: what` (`query.a: key not known`); empty when clean.
    pub reasons: Vec<String>,
}

impl Decision {
    /// Whether no rule was broken.
    pub fn is_clean(&self) -> bool {
        self.reasons.is_empty()
    }

    fn from_reasons(mut reasons: Vec<String>) -> Self {
        if reasons.len() > MAX_REASONS {
            let more = reasons.len() - (MAX_REASONS - 1);
            reasons.truncate(MAX_REASONS - 1);
            reasons.push(format!("and {more} more"));
        }
        Decision { reasons }
    }
}

/// Header values remembered per connection and direction.
const ACCEPTED_PAIRS: usize = 12;
/// Longest header value remembered.
const ACCEPTED_VALUE_LEN: usize = 128;

/// Header values a connection sent before that the profile accepted, and the generation of
/// the profile then (`SharedProfile::read_with_generation`). A client sends much the same
/// headers on every request of a connection (`Host`, `User-Agent`, `Accept`), and what a
/// profile accepted once it accepts again: a value remembered is not sampled again until the
/// profile changes. The same holds for the `Content-Type` rule, whose last accepted value is
/// remembered too. Bounded: `ACCEPTED_PAIRS` values and one media type, each of at most
/// `ACCEPTED_VALUE_LEN` bytes.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    generation: u64,
    pairs: Vec<(String, String)>,
    /// The pair replaced next when all are taken by other names.
    next: usize,
    /// The last `Content-Type` value the content-type rule accepted, when `media_known`.
    media: String,
    media_known: bool,
}

impl Accepted {
    /// Forgets every value when the profile is not the one they were accepted by.
    pub(crate) fn renew(&mut self, generation: u64) {
        if self.generation != generation {
            self.pairs.clear();
            self.next = 0;
            self.media_known = false;
            self.generation = generation;
        }
    }

    #[cfg(test)]
    fn has(&self, name: &str, value: &str) -> bool {
        self.has_near(0, name, value)
    }

    /// `has`, looking first at place `hint`: a client sends its headers in the same order on
    /// every request, so the `i`th header is mostly remembered in the `i`th place.
    fn has_near(&self, hint: usize, name: &str, value: &str) -> bool {
        let same = |(k, v): &(String, String)| k == name && v == value;
        self.pairs.get(hint).is_some_and(same) || self.pairs.iter().any(same)
    }

    /// Remembers `value` of `name`, in place of the value remembered for the same name (a
    /// `Date` replaces the previous second's), else in a free or the oldest place.
    fn add(&mut self, name: &str, value: &str) {
        if value.len() > ACCEPTED_VALUE_LEN || name.len() > MAX_KEY_LEN {
            return;
        }
        let at = match self.pairs.iter().position(|(k, _)| k == name) {
            Some(at) => at,
            None if self.pairs.len() < ACCEPTED_PAIRS => {
                self.pairs.push(Default::default());
                self.pairs.len() - 1
            }
            None => {
                let at = self.next;
                self.next = (at + 1) % ACCEPTED_PAIRS;
                at
            }
        };
        let (k, v) = &mut self.pairs[at];
        k.clear();
        k.push_str(name);
        v.clear();
        v.push_str(value);
    }

    /// Bytes of memory held.
    pub(crate) fn retained_bytes(&self) -> usize {
        self.pairs
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity())
            .sum::<usize>()
            + self.media.capacity()
    }
}

/// `rule.accepts_value(value)`, answered from `accepted` when it remembers `value`; a value
/// accepted is remembered.
fn media_accepted(rule: &MediaRule, value: &str, accepted: Option<&mut Accepted>) -> bool {
    let Some(accepted) = accepted else {
        return rule.accepts_value(value);
    };
    if accepted.media_known && accepted.media == value {
        return true;
    }
    let ok = rule.accepts_value(value);
    if ok && value.len() <= ACCEPTED_VALUE_LEN {
        accepted.media.clear();
        accepted.media.push_str(value);
        accepted.media_known = true;
    }
    ok
}

/// `rules.check` of header `name`, the `at`th of its message, skipped for a value `accepted`
/// remembers; a value that breaks nothing is remembered.
fn check_header(
    rules: &KeyedRules<ValueProfile>,
    prefix: &str,
    at: usize,
    name: &str,
    value: &str,
    accepted: Option<&mut Accepted>,
    reasons: &mut Vec<String>,
) {
    let Some(accepted) = accepted else {
        return rules.check(prefix, name, &ValueSample::of(value), reasons);
    };
    if accepted.has_near(at, name, value) {
        return;
    }
    let sample = ValueSample::of(value);
    if rules.accepts(name, &sample) {
        accepted.add(name, value);
    } else {
        rules.check(prefix, name, &sample, reasons);
    }
}

/// Checks `req` against the request rules of `profile`.
pub fn decide(profile: &Profile, req: &Request) -> Decision {
    decide_remembering(profile, req, None)
}

/// `decide`, skipping the header values `accepted` remembers (it must have been renewed with
/// the generation of `profile`) and remembering those that pass.
pub(crate) fn decide_remembering(
    profile: &Profile,
    req: &Request,
    mut accepted: Option<&mut Accepted>,
) -> Decision {
    let r = &profile.req;
    let mut reasons = Vec::new();
    if !r.methods.contains(&req.method) {
        reasons.push(format!("method: '{}' not known", printable(&req.method)));
    }
    if !r.protocols.contains(&req.protocol) {
        reasons.push(format!(
            "protocol: '{}' not known",
            printable(&req.protocol)
        ));
    }
    let split = crate::path::split_to_decide(&req.raw_path, &r.positions);
    match r.paths.rule_for(&split.template) {
        Some(rule) => {
            let sample = PathSample::of(&split);
            if !rule.accepts(&sample) {
                rule.check(&sample, "path", &mut reasons);
            }
        }
        None => reasons.push(format!(
            "path: template '{}' not known",
            printable(&split.template)
        )),
    }
    for (k, v) in &req.query {
        r.query.check("query", k, &ValueSample::of(v), &mut reasons);
    }
    for (i, (k, v)) in req.headers.iter().enumerate() {
        check_header(
            &r.headers,
            "header",
            i,
            k,
            v,
            accepted.as_deref_mut(),
            &mut reasons,
        );
    }
    if let Some(ct) = req.header("content-type") {
        if !media_accepted(&r.content_type, ct, accepted) {
            r.content_type
                .check(&MediaType::parse(ct), "content-type", &mut reasons);
        }
    }
    if let Some(n) = req.content_length() {
        if !r.content_length.contains(length_bucket(n)) {
            reasons.push(format!("content-length: {n} outside learned range"));
        }
    }
    if let Some(ip) = req.client_ip {
        with_network(ip, |net| {
            if !r.client.contains_str(net) {
                reasons.push(format!("client: {net} not known"));
            }
        });
    }
    if let Some(ip) = req.forwarded_hop() {
        let net = network_of(ip);
        if !r.hop.contains(&net) {
            reasons.push(format!("client.hop: {net} not known"));
        }
    }
    if req.body_over_cap && !r.bodies_over_cap {
        reasons.push("body: larger than the inspection cap".to_string());
    }
    match &req.body {
        Some(Body::Json(v)) => {
            let (nodes, truncated) = flatten_json(v);
            if truncated && !r.json_truncated {
                reasons.push("body.json: too large or deep to inspect whole".to_string());
            }
            for node in &nodes {
                let key = json_key(&node.path);
                let sample = json_sample(node);
                if !r.json.accepts(key, &sample) {
                    let at = format!("body.json{}", printable(key));
                    r.json.check_at(&at, key, &sample, &mut reasons);
                }
            }
        }
        Some(Body::Form(fields)) => {
            for (k, v) in fields {
                r.form
                    .check("body.form", k, &ValueSample::of(v), &mut reasons);
            }
        }
        Some(Body::InvalidJson) => reasons.push("body: not valid json".to_string()),
        Some(Body::InvalidMultipart) => reasons.push("body: not valid multipart".to_string()),
        None => {}
    }
    Decision::from_reasons(reasons)
}

/// Checks `resp` against the response rules of `profile`. A response faster than learned is
/// not a reason; a slower one is.
pub fn decide_response(profile: &Profile, resp: &Response) -> Decision {
    let headers = || resp.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
    decide_response_parts(profile, resp.status, headers, resp.elapsed, None)
}

/// `decide_response` of a response given by its parts (`headers` iterates over the headers
/// from the first, values as bytes read as lossy UTF-8 like `Response` holds them): the proxy
/// checks the upstream's headers where they are, without copying them into a `Response`.
/// Header values `accepted` remembers are skipped, as by `decide_remembering`.
pub(crate) fn decide_response_parts<'h, H>(
    profile: &Profile,
    status: u16,
    headers: impl Fn() -> H,
    elapsed: Duration,
    mut accepted: Option<&mut Accepted>,
) -> Decision
where
    H: Iterator<Item = (&'h str, &'h [u8])>,
{
    let r = &profile.resp;
    let mut reasons = Vec::new();
    if !r.status.contains(&status) {
        reasons.push(format!("response.status: {status} not known"));
    }
    for (i, (k, v)) in headers().enumerate() {
        check_header(
            &r.headers,
            "response.header",
            i,
            k,
            &text(v),
            accepted.as_deref_mut(),
            &mut reasons,
        );
    }
    let first = |name: &str| headers().find(|(k, _)| *k == name).map(|(_, v)| text(v));
    if let Some(ct) = first("content-type") {
        if !media_accepted(&r.content_type, &ct, accepted) {
            r.content_type.check(
                &MediaType::parse(&ct),
                "response.content-type",
                &mut reasons,
            );
        }
    }
    if let Some(n) = first("content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
        if !r.content_length.contains(length_bucket(n)) {
            reasons.push(format!(
                "response.content-length: {n} outside learned range"
            ));
        }
    }
    if is_slow_after(profile, elapsed) {
        reasons.push(format!(
            "response.time: {} ms above learned range",
            elapsed.as_millis()
        ));
    }
    Decision::from_reasons(reasons)
}

/// A header value as text, as `Response` and `Request` hold it: lossy UTF-8.
fn text(v: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(v) {
        Ok(t) => Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(v),
    }
}

/// Whether `resp` took clearly longer than any response learned (more than twice the
/// slowest, plus 10 ms so that scheduling jitter on fast services is not an outlier): a pod
/// indicator (a pod that got slower may be busy with something else) and a response reason.
pub fn is_slow(profile: &Profile, resp: &Response) -> bool {
    is_slow_after(profile, resp.elapsed)
}

/// `is_slow` of a response that took `elapsed`.
pub(crate) fn is_slow_after(profile: &Profile, elapsed: Duration) -> bool {
    let t = elapsed.as_millis() as u64;
    profile
        .resp
        .time_ms
        .max()
        .is_some_and(|max| t > 2 * decompress_max(max) + 10)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Asserts that `d` gives each of `want` among its reasons.
    fn assert_reasons(d: &Decision, want: &[&str]) {
        for w in want {
            assert!(
                d.reasons.iter().any(|r| r == w),
                "{w:?} not in {:?}",
                d.reasons
            );
        }
    }

    fn get(target: &str, headers: &[(&str, &str)]) -> Request {
        Request::new(
            "GET",
            "HTTP/1.1",
            target,
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Some("10.0.0.5".parse().unwrap()),
        )
    }

    fn learned() -> Profile {
        let mut p = Profile::default();
        for (i, q) in ["shoes", "red shoes", "blue hat", "winter coat"]
            .iter()
            .enumerate()
        {
            let target = format!("/search?q={}&page={}", q.replace(' ', "+"), i + 1);
            p.learn(&get(
                &target,
                &[("user-agent", "curl/8.5.0"), ("accept", "*/*")],
            ));
        }
        p
    }

    #[test]
    fn learned_requests_are_clean() {
        let p = learned();
        let d = decide(
            &p,
            &get(
                "/search?q=blue+shoes&page=2",
                &[("user-agent", "curl/8.4.0")],
            ),
        );
        assert!(d.is_clean(), "{:?}", d.reasons);
    }

    #[test]
    fn remembered_header_values_give_the_same_decisions() {
        let p = learned();
        let mut accepted = Accepted::default();
        accepted.renew(1);
        let requests = [
            get("/search?q=shoes", &[("user-agent", "curl/8.4.0")]),
            get("/search?q=shoes", &[("user-agent", "curl/8$5.0")]),
            get("/search?q=red+shoes", &[("user-agent", "curl/8.4.0")]),
            get("/search?q=shoes", &[("user-agent", "curl/8$5.0")]),
            get("/search?q=x", &[("user-agent", "curl/8.4.0"), ("x-a", "1")]),
        ];
        for req in requests.iter().chain(&requests) {
            assert_eq!(
                decide_remembering(&p, req, Some(&mut accepted)),
                decide(&p, req)
            );
        }
        assert!(accepted.has("user-agent", "curl/8.4.0"));
        for hint in [0, 1, ACCEPTED_PAIRS + 3] {
            assert!(accepted.has_near(hint, "user-agent", "curl/8.4.0"));
        }
        assert!(
            !accepted.has("user-agent", "curl/8$5.0"),
            "refused values are not kept"
        );
        assert!(!accepted.has("x-a", "1"), "unknown headers are not kept");
        accepted.renew(2);
        assert!(
            !accepted.has("user-agent", "curl/8.4.0"),
            "a new profile forgets"
        );
        for i in 0..3 * ACCEPTED_PAIRS {
            accepted.add(&format!("h{i}"), "v");
            accepted.add("date", &i.to_string());
        }
        assert_eq!(accepted.pairs.len(), ACCEPTED_PAIRS);
        assert!(accepted.has("date", &(3 * ACCEPTED_PAIRS - 1).to_string()));
        assert_eq!(
            accepted.pairs.iter().filter(|(k, _)| k == "date").count(),
            1
        );
        accepted.add("long", &"x".repeat(ACCEPTED_VALUE_LEN + 1));
        assert!(!accepted.pairs.iter().any(|(k, _)| k == "long"));
    }

    #[test]
    fn remembered_media_types_give_the_same_decisions() {
        let mut p = Profile::default();
        let json = [("content-type", "application/json; charset=utf-8")];
        p.learn(&get("/a", &json));
        let mut accepted = Accepted::default();
        accepted.renew(1);
        let requests = [
            get("/a", &json),
            get("/a", &[("content-type", "text/html")]),
            get("/a", &[("content-type", "application/json; charset=x$y")]),
            get("/a", &json),
        ];
        for req in requests.iter().chain(&requests) {
            assert_eq!(
                decide_remembering(&p, req, Some(&mut accepted)),
                decide(&p, req)
            );
        }
        assert!(accepted.media_known && accepted.media == json[0].1);
        accepted.renew(2);
        assert!(!accepted.media_known, "a new profile forgets");
        let rule = &p.req.content_type;
        assert!(!media_accepted(rule, "text/html", Some(&mut accepted)));
        assert!(!accepted.media_known, "refused types are not kept");
    }

    #[test]
    fn reasons_name_the_place_and_the_rule() {
        let p = learned();
        let d = decide(
            &p,
            &get("/search?q=shoes&a=1", &[("user-agent", "curl/8$5.0")]),
        );
        assert_eq!(
            d.reasons,
            vec![
                "query.a: key not known".to_string(),
                "header.user-agent: new punctuation '$'".to_string(),
            ]
        );
    }

    #[test]
    fn method_path_client_and_body_reasons() {
        let mut p = learned();
        let mut post = Request::new(
            "POST",
            "HTTP/1.1",
            "/search",
            vec![("content-type".into(), "application/json".into())],
            Some("10.0.0.9".parse().unwrap()),
        );
        post.attach_body(br#"{"q":"shoes","n":1}"#);
        p.learn(&post);

        let mut r = Request::new(
            "DELETE",
            "HTTP/1.1",
            "/admin/x",
            vec![],
            Some("192.168.1.1".parse().unwrap()),
        );
        r.body = None;
        let d = decide(&p, &r);
        assert_reasons(
            &d,
            &[
                "method: 'DELETE' not known",
                "path: template '/admin/x' not known",
                "client: 192.168.1.0/24 not known",
            ],
        );

        let mut bad = post.clone();
        bad.attach_body(br#"{"q":["x"],"n":1,"admin":true}"#);
        let d = decide(&p, &bad);
        assert_reasons(
            &d,
            &[
                "body.json.q: kind array not known",
                "body.json.admin: key not known",
                "body.json: 3 items outside learned range",
            ],
        );

        let mut padded = post.clone();
        padded.body = None;
        padded.body_over_cap = true;
        assert_eq!(
            decide(&p, &padded).reasons,
            vec!["body: larger than the inspection cap".to_string()]
        );
        let mut learned_big = p.clone();
        learned_big.learn(&padded);
        assert!(
            decide(&learned_big, &padded).is_clean(),
            "learned as normal"
        );

        bad.attach_body(b"{oops");
        assert_eq!(
            decide(&p, &bad).reasons,
            vec!["body: not valid json".to_string()]
        );

        let mut sqli = post.clone();
        sqli.attach_body(br#"{"q":"x' OR 1=1 --","n":1}"#);
        let d = decide(&p, &sqli);
        assert_reasons(
            &d,
            &[
                "body.json.q: new punctuation '''",
                "body.json.q: new comment marker '--'",
            ],
        );
    }

    #[test]
    fn reasons_are_bounded() {
        let p = Profile::default();
        let target = format!(
            "/?{}",
            (0..40)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join("&")
        );
        let d = decide(&p, &get(&target, &[]));
        assert_eq!(d.reasons.len(), MAX_REASONS);
        assert!(d.reasons.last().unwrap().starts_with("and "));
    }

    #[test]
    fn responses_by_parts_are_decided_as_responses() {
        let mut p = Profile::default();
        p.learn_response(&Response {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("x-id".into(), "ab12".into()),
            ],
            elapsed: Duration::from_millis(3),
        });
        let cases: [&[(&str, &[u8])]; 4] = [
            &[("content-type", b"text/plain"), ("x-id", b"cd34")],
            &[("content-type", b"text/html"), ("x-id", b"\xff\xfe")],
            &[
                ("x-id", b"a$b"),
                ("content-length", b"99999"),
                ("x-id", b"q"),
            ],
            &[],
        ];
        for headers in cases {
            let resp = Response {
                status: 500,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
                    .collect(),
                elapsed: Duration::from_millis(50),
            };
            let by_parts =
                decide_response_parts(&p, 500, || headers.iter().copied(), resp.elapsed, None);
            assert_eq!(by_parts, decide_response(&p, &resp), "{headers:?}");
            assert!(!by_parts.is_clean());
        }
    }

    #[test]
    fn responses_are_checked() {
        let mut p = Profile::default();
        let ok = Response {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("content-length".into(), "12".into()),
            ],
            elapsed: Duration::from_millis(3),
        };
        p.learn_response(&ok);
        assert!(decide_response(&p, &ok).is_clean());
        let bad = Response {
            status: 500,
            headers: vec![("content-length".into(), "100000".into())],
            elapsed: Duration::from_millis(900),
        };
        let d = decide_response(&p, &bad);
        assert_eq!(
            d.reasons,
            vec![
                "response.status: 500 not known".to_string(),
                "response.content-length: 100000 outside learned range".to_string(),
                "response.time: 900 ms above learned range".to_string(),
            ]
        );
        let fast = Response {
            elapsed: Duration::ZERO,
            ..ok.clone()
        };
        assert!(!is_slow(&p, &fast));
        let jitter = Response {
            elapsed: Duration::from_millis(15),
            ..ok
        };
        assert!(
            !is_slow(&p, &jitter),
            "3 ms learned: 15 ms is jitter, not an outlier"
        );
    }
}
