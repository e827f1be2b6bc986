//! The corpus of both services, from one seed: training, benign test sets, attacks by class,
//! and the injections that fit the learned characters of a field.

use crate::attacks;
use crate::corpus::{Attack, Class, Point, Req, Rng, Sample};
use crate::shop::Draw;
use crate::{forum, shop};

/// How many requests of each benign set per service.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub train: usize,
    pub benign: usize,
    pub new: usize,
    /// Keep every n-th classic attack (1: all).
    pub attack_stride: usize,
}

impl Sizes {
    pub const FULL: Sizes = Sizes {
        train: 6000,
        benign: 2000,
        new: 2000,
        attack_stride: 1,
    };
    pub const SHORT: Sizes = Sizes {
        train: 2000,
        benign: 1000,
        new: 500,
        attack_stride: 3,
    };
}

struct Service {
    name: &'static str,
    host: &'static str,
    benign: fn(&mut Rng, Draw) -> Req,
    inject: fn(&mut Rng, &str, &str) -> Req,
    /// Fields that take classic payloads.
    classic: &'static [&'static str],
    /// Fields with their training values, for the shape-fitting set.
    fitting: &'static [Point],
}

const SERVICES: [Service; 2] = [
    Service {
        name: "shop",
        host: "shop.test",
        benign: shop::benign,
        inject: shop::inject,
        classic: &[
            "query.q",
            "query.sort",
            "query.category",
            "path.user",
            "path.id",
            "json.note",
            "json.bio",
            "json.display_name",
            "header.user-agent",
        ],
        fitting: shop::POINTS,
    },
    Service {
        name: "forum",
        host: "forum.test",
        benign: forum::benign,
        inject: forum::inject,
        classic: &[
            "query.q",
            "form.username",
            "form.password",
            "form.body",
            "query.author",
            "path.slug",
            "path.user",
            "query.tag",
            "header.cookie",
        ],
        fitting: forum::POINTS,
    },
];

/// The host header of a service.
pub fn host_of(service: &str) -> &'static str {
    SERVICES
        .iter()
        .find(|s| s.name == service)
        .map(|s| s.host)
        .unwrap_or("localhost")
}

/// Names of the services.
pub fn services() -> Vec<&'static str> {
    SERVICES.iter().map(|s| s.name).collect()
}

/// The whole corpus of `service` for `seed`.
pub fn corpus(service: &str, seed: u64, sizes: Sizes) -> Vec<Sample> {
    let Some(s) = SERVICES.iter().find(|s| s.name == service) else {
        return Vec::new();
    };
    let mut rng = Rng::new(seed ^ (s.host.len() as u64 * 0x1000_0001));
    let mut out = Vec::new();
    let mut push = |class: Class, what: String, req: Req| {
        out.push(Sample {
            service: s.name,
            class,
            what,
            req,
        })
    };
    for (class, n, draw) in [
        (Class::Train, sizes.train, Draw::Same),
        (Class::Benign, sizes.benign, Draw::Same),
        (Class::NewOrdinary, sizes.new, Draw::New),
    ] {
        for _ in 0..n {
            let req = (s.benign)(&mut rng, draw);
            push(class, req.target.clone(), req);
        }
    }
    let mut k = 0usize;
    for class in Attack::ALL {
        for payload in attacks::payloads(class) {
            for at in s.classic {
                k += 1;
                if k % sizes.attack_stride != 0 {
                    continue;
                }
                let req = (s.inject)(&mut rng, at, payload);
                push(
                    Class::Attack(class),
                    format!("{at}: {}", payload.escape_debug()),
                    req,
                );
            }
        }
    }
    for (at, value) in attacks::oversized(&mut rng) {
        if s.classic.contains(&at) {
            let req = (s.inject)(&mut rng, at, &value);
            push(
                Class::Attack(Attack::Oversized),
                format!("{at}: {} characters", value.chars().count()),
                req,
            );
        }
    }
    for (what, req) in attacks::nosql(s.name == "shop") {
        let req = req.header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        );
        push(Class::Attack(Attack::Nosql), what, req);
    }
    for (what, req) in attacks::structural(s.name == "shop") {
        push(Class::Attack(Attack::Structural), what, req);
    }
    for (at, values) in s.fitting {
        let mut field_rng = Rng::new(seed ^ 0xF1E1D);
        let seen = attacks::alphabet((0..4000).map(|_| values(&mut field_rng)));
        for payload in attacks::fitting(&seen) {
            let req = (s.inject)(&mut rng, at, payload);
            push(
                Class::ShapeFit,
                format!("{at}: {}", payload.escape_debug()),
                req,
            );
        }
    }
    out
}
