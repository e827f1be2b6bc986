//! The learned micro-rules of one service: what its requests and responses look like.

use serde::{Deserialize, Serialize};

use crate::path::{PathRule, Positions};
use crate::request::{flatten_json, Body, JsonKind, Request, Response};
use crate::rules::{network_of, KeyedRules, MediaRule, Rule, SmallSet};
use crate::value::{compress, Ranges, ValueProfile, ValueSample};

/// Version of the serialized profile document; bumped on an incompatible change.
pub const PROFILE_VERSION: u32 = 2;

/// Bounds that keep a profile small whatever the traffic; stored in the profile so that a
/// merge or an import keeps the bounds it was learned with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Keys learned by name per map (query, headers, form fields); the rest fold into `other`.
    pub keys: usize,
    /// Path templates learned by name.
    pub paths: usize,
    /// JSON paths learned by name.
    pub json_paths: usize,
    /// Distinct methods, protocols or statuses before the set opens.
    pub values: usize,
    /// Distinct client networks before the set opens.
    pub networks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            keys: 32,
            paths: 64,
            json_paths: 128,
            values: 16,
            networks: 16,
        }
    }
}

/// Rules of one flattened JSON path: the kinds of node seen there, the profile of its scalar
/// text, the number of items of its arrays or objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonRule {
    #[serde(rename = "k")]
    pub(crate) kinds: u8,
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<ValueProfile>,
    #[serde(rename = "n", default, skip_serializing_if = "Ranges::is_empty")]
    pub(crate) items: Ranges,
}

/// What one JSON node contributes to a JSON rule.
pub struct JsonSample {
    kind: JsonKind,
    value: Option<ValueSample>,
    items: Option<u64>,
}

impl Rule for JsonRule {
    type Sample = JsonSample;
    fn learn(&mut self, s: &JsonSample) {
        self.kinds |= 1 << s.kind as u8;
        if let Some(v) = &s.value {
            self.value
                .get_or_insert_with(ValueProfile::default)
                .learn(v);
        }
        if let Some(n) = s.items {
            self.items.learn(compress(n));
        }
    }
    fn merge(&mut self, other: &Self) {
        self.kinds |= other.kinds;
        if let Some(v) = &other.value {
            self.value
                .get_or_insert_with(ValueProfile::default)
                .merge(v);
        }
        self.items.merge(&other.items);
    }
    fn check(&self, s: &JsonSample, at: &str, reasons: &mut Vec<String>) {
        if self.kinds & (1 << s.kind as u8) == 0 {
            reasons.push(format!("{at}: kind {} not known", s.kind.name()));
            return;
        }
        if let (Some(rule), Some(v)) = (&self.value, &s.value) {
            rule.check(v, at, reasons);
        }
        if let Some(n) = s.items {
            if !self.items.contains(compress(n)) {
                reasons.push(format!("{at}: {n} items outside learned range"));
            }
        }
    }
    fn accepts(&self, s: &JsonSample) -> bool {
        self.kinds & (1 << s.kind as u8) != 0
            && match (&self.value, &s.value) {
                (Some(rule), Some(v)) => rule.accepts(v),
                _ => true,
            }
            && s.items.is_none_or(|n| self.items.contains(compress(n)))
    }
    fn normalize(&mut self) {
        self.kinds &= (1 << JsonKind::ALL.len()) - 1;
        if let Some(v) = &mut self.value {
            v.normalize();
        }
        self.items.normalize();
    }
}

/// The learned rules of requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestRules {
    pub(crate) methods: SmallSet<String>,
    pub(crate) protocols: SmallSet<String>,
    pub(crate) paths: KeyedRules<PathRule>,
    /// Which path positions are parameters.
    #[serde(default, skip_serializing_if = "crate::profile::no_positions")]
    pub(crate) positions: Positions,
    pub(crate) query: KeyedRules<ValueProfile>,
    pub(crate) headers: KeyedRules<ValueProfile>,
    pub(crate) content_type: MediaRule,
    /// Log2 buckets of `Content-Length`.
    pub(crate) content_length: Ranges,
    pub(crate) client: SmallSet<String>,
    pub(crate) hop: SmallSet<String>,
    pub(crate) json: KeyedRules<JsonRule>,
    /// Whether a JSON body too large to walk whole was learned: then such bodies are normal.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) json_truncated: bool,
    pub(crate) form: KeyedRules<ValueProfile>,
    /// Whether bodies over the inspection cap were learned: then they are normal, otherwise
    /// such a body is a way around inspection.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) bodies_over_cap: bool,
}

/// The learned rules of responses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponseRules {
    pub(crate) status: SmallSet<u16>,
    pub(crate) headers: KeyedRules<ValueProfile>,
    pub(crate) content_type: MediaRule,
    pub(crate) content_length: Ranges,
    /// Compressed milliseconds from forwarding to the response head.
    pub(crate) time_ms: Ranges,
}

/// The micro-rules of one service, learned from its traffic, merged across its pods,
/// serialized as one compact JSON document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(rename = "version")]
    pub(crate) version: u32,
    #[serde(default)]
    pub(crate) limits: Limits,
    /// Requests learned.
    #[serde(default)]
    pub(crate) requests: u64,
    /// Responses learned.
    #[serde(default)]
    pub(crate) responses: u64,
    #[serde(rename = "request", default)]
    pub(crate) req: RequestRules,
    #[serde(rename = "response", default)]
    pub(crate) resp: ResponseRules,
}

impl Default for Profile {
    fn default() -> Self {
        Profile::new(Limits::default())
    }
}

/// Log2 bucket of a length: 0 for 0, else one more than the position of the highest bit.
pub fn length_bucket(n: u64) -> u8 {
    (64 - n.leading_zeros()) as u8
}

impl Profile {
    /// An empty profile with the given bounds.
    pub fn new(limits: Limits) -> Self {
        Profile {
            version: PROFILE_VERSION,
            limits,
            requests: 0,
            responses: 0,
            req: RequestRules::default(),
            resp: ResponseRules::default(),
        }
    }

    /// Requests learned so far (summed over merged profiles).
    pub fn requests_learned(&self) -> u64 {
        self.requests
    }

    /// How many fields (query keys, headers, form fields, JSON leaves, path parameters) the
    /// profile has, and how many of them learned fewer than `min_values` values.
    pub fn variety(&self, min_values: u32) -> crate::mode::Variety {
        let r = &self.req;
        let fields = r
            .query
            .rules()
            .chain(r.headers.rules())
            .chain(r.form.rules())
            .chain(r.json.rules().filter_map(|j| j.value.as_ref()))
            .chain(r.paths.rules().flat_map(|p| p.params.iter()));
        let mut v = crate::mode::Variety::default();
        for f in fields {
            v.fields += 1;
            v.thin += usize::from(f.seen() < min_values);
        }
        v
    }

    /// The bounds of this profile.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Widens the rules to accept `req`.
    pub fn learn(&mut self, req: &Request) {
        let l = self.limits;
        let r = &mut self.req;
        self.requests += 1;
        r.methods.learn(req.method.clone(), l.values);
        r.protocols.learn(req.protocol.clone(), l.values);
        crate::path::learn(&mut r.paths, &mut r.positions, &req.raw_path, l.paths);
        for (k, v) in &req.query {
            r.query.learn(k, &ValueSample::of(v), l.keys);
        }
        for (k, v) in &req.headers {
            r.headers.learn(k, &ValueSample::of(v), l.keys);
        }
        if let Some(media) = req.content_type() {
            r.content_type.learn(&media);
        }
        if let Some(n) = req.content_length() {
            r.content_length.learn(length_bucket(n));
        }
        if let Some(ip) = req.client_ip {
            r.client.learn(network_of(ip), l.networks);
        }
        if let Some(ip) = req.forwarded_hop() {
            r.hop.learn(network_of(ip), l.networks);
        }
        r.bodies_over_cap |= req.body_over_cap;
        match &req.body {
            Some(Body::Json(v)) => {
                let (nodes, truncated) = flatten_json(v);
                r.json_truncated |= truncated;
                for node in nodes {
                    r.json
                        .learn(json_key(&node.path), &json_sample(&node), l.json_paths);
                }
            }
            Some(Body::Form(fields)) => {
                for (k, v) in fields {
                    r.form.learn(k, &ValueSample::of(v), l.keys);
                }
            }
            Some(Body::InvalidJson) | Some(Body::InvalidMultipart) | None => {}
        }
    }

    /// Widens the response rules to accept `resp`.
    pub fn learn_response(&mut self, resp: &Response) {
        let l = self.limits;
        let r = &mut self.resp;
        self.responses += 1;
        r.status.learn(resp.status, l.values);
        for (k, v) in &resp.headers {
            r.headers.learn(k, &ValueSample::of(v), l.keys);
        }
        if let Some(ct) = resp.header("content-type") {
            r.content_type.learn(&crate::rules::MediaType::parse(ct));
        }
        if let Some(n) = resp
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
        {
            r.content_length.learn(length_bucket(n));
        }
        r.time_ms.learn(compress(resp.elapsed.as_millis() as u64));
    }

    /// Widens this profile to accept whatever `other` accepts: the profiles of several pods of
    /// one service merge into the service's profile. This profile's bounds are kept.
    pub fn merge(&mut self, other: &Profile) {
        let l = self.limits;
        self.requests += other.requests;
        self.responses += other.responses;
        let (a, b) = (&mut self.req, &other.req);
        a.methods.merge(&b.methods, l.values);
        a.protocols.merge(&b.protocols, l.values);
        a.paths.merge(&b.paths, l.paths);
        for prefix in a.positions.merge(&b.positions, l.paths) {
            crate::path::fold(&mut a.paths, &prefix);
        }
        a.query.merge(&b.query, l.keys);
        a.headers.merge(&b.headers, l.keys);
        a.content_type.merge(&b.content_type);
        a.content_length.merge(&b.content_length);
        a.client.merge(&b.client, l.networks);
        a.hop.merge(&b.hop, l.networks);
        a.json.merge(&b.json, l.json_paths);
        a.json_truncated |= b.json_truncated;
        a.bodies_over_cap |= b.bodies_over_cap;
        a.form.merge(&b.form, l.keys);
        let (a, b) = (&mut self.resp, &other.resp);
        a.status.merge(&b.status, l.values);
        a.headers.merge(&b.headers, l.keys);
        a.content_type.merge(&b.content_type);
        a.content_length.merge(&b.content_length);
        a.time_ms.merge(&b.time_ms);
    }

    /// Restores every bound and invariant, for a document that was loaded or edited by hand.
    pub(crate) fn normalize(&mut self) {
        let l = self.limits;
        let r = &mut self.req;
        r.methods.normalize(l.values);
        r.protocols.normalize(l.values);
        r.paths.normalize(l.paths);
        r.positions.normalize(l.paths);
        r.query.normalize(l.keys);
        r.headers.normalize(l.keys);
        r.content_type.normalize();
        r.content_length.normalize();
        r.client.normalize(l.networks);
        r.hop.normalize(l.networks);
        r.json.normalize(l.json_paths);
        r.form.normalize(l.keys);
        let s = &mut self.resp;
        s.status.normalize(l.values);
        s.headers.normalize(l.keys);
        s.content_type.normalize();
        s.content_length.normalize();
        s.time_ms.normalize();
    }
}

pub(crate) fn no_positions(p: &Positions) -> bool {
    *p == Positions::default()
}

/// `$.user.name` is learned as `.user.name`, the root as the empty key.
pub(crate) fn json_key(path: &str) -> &str {
    path.strip_prefix('$').unwrap_or(path)
}

pub(crate) fn json_sample(node: &crate::request::JsonNode) -> JsonSample {
    JsonSample {
        kind: node.kind,
        value: node.text.as_deref().map(ValueSample::of),
        items: node.items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::decide;

    fn req(target: &str, ua: &str, ip: &str) -> Request {
        Request::new(
            "GET",
            "HTTP/1.1",
            target,
            vec![("user-agent".into(), ua.into())],
            Some(ip.parse().unwrap()),
        )
    }

    #[test]
    fn merge_accepts_what_either_pod_learned() {
        let mut a = Profile::default();
        a.learn(&req("/items?id=12", "app/1.0", "10.0.1.1"));
        let mut b = Profile::default();
        b.learn(&req("/users/7/orders?sort=asc", "app/1.0", "10.0.2.1"));
        b.learn_response(&Response {
            status: 201,
            ..Response::default()
        });
        let only_b = req("/users/9/orders?sort=asc", "app/1.0", "10.0.2.9");
        assert!(!decide(&a, &only_b).is_clean());
        a.merge(&b);
        assert_eq!(a.requests_learned(), 2);
        assert_eq!(a.responses, 1);
        assert!(decide(&a, &only_b).is_clean(), "{:?}", decide(&a, &only_b));
        assert!(decide(&a, &req("/items?id=99", "app/1.0", "10.0.1.4")).is_clean());
        assert!(a.resp.status.contains(&201));
    }

    #[test]
    fn merge_keeps_this_profiles_bounds() {
        let mut a = Profile::new(Limits {
            keys: 2,
            ..Limits::default()
        });
        let mut b = Profile::default();
        for i in 0..5 {
            b.learn(&req(&format!("/?p{i}=1"), "x", "10.0.0.1"));
        }
        a.merge(&b);
        assert_eq!(a.req.query.len(), 2);
        assert!(a.req.query.has_other());
        let d = decide(&a, &req("/?p4=1", "x", "10.0.0.1"));
        assert!(
            d.is_clean(),
            "folded key checked against other: {:?}",
            d.reasons
        );
    }

    fn word(mut i: usize) -> String {
        let mut w = String::from("p");
        loop {
            w.push((b'a' + (i % 26) as u8) as char);
            i /= 26;
            if i == 0 {
                return w;
            }
        }
    }

    #[test]
    fn profile_memory_is_bounded_whatever_the_traffic() {
        let mut p = Profile::default();
        for i in 0..5000 {
            p.learn(&req(
                &format!("/{}/x?k{i}=v{i}&q=1", word(i)),
                &format!("agent-{i}"),
                &format!("10.{}.{}.1", i % 200, i / 200),
            ));
        }
        let l = p.limits();
        // Thousands of distinct first segments make that position a parameter: one template.
        assert!(p.req.paths.len() <= l.paths);
        assert!(p.req.positions.is_parameter(""));
        assert_eq!(p.req.query.len(), l.keys);
        assert!(
            p.req.client.contains(&"192.0.2.0/24".to_string()),
            "open after too many networks"
        );
        let size = crate::persist::export(&p).unwrap().len();
        assert!(size < 64 * 1024, "profile document is {size} bytes");
    }
}
