//! The first service: a shop's JSON REST API (product listing and search, products by id,
//! user profiles by user name, orders as JSON bodies, bearer tokens, browsers and an app).

use crate::corpus::{form_encode, json_str, path_encode, Point, Req, Rng};
use crate::values::*;

/// Which values a benign request draws.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    /// The training distribution.
    Same,
    /// New but ordinary values where the request has a field that takes them.
    New,
}

fn headers(rng: &mut Rng, req: Req, draw: Draw) -> Req {
    let mut req = client_headers(rng, req, draw, |rng| {
        rng.pick(&[
            "application/json",
            "*/*",
            "application/json, text/plain, */*",
        ])
    });
    if rng.chance(70) {
        req = req.header("authorization", format!("Bearer {}", rng.alnum(40)));
    }
    if rng.chance(40) {
        req = req.header("x-request-id", rng.uuid());
    }
    req
}

pub fn search_text(rng: &mut Rng, draw: Draw) -> String {
    match draw {
        Draw::Same => {
            let mut q = rng.words(SHOP_WORDS, 1, 3);
            if rng.chance(10) {
                q.push_str(&format!(
                    " {}",
                    rng.pick(&["2-pack", "xl", "size 42", "t-shirt", "3.5mm", "4k"])
                ));
            }
            q
        }
        Draw::New => new_text(rng, NEW_SHOP_WORDS, NEW_SEARCHES),
    }
}

pub fn user_name(rng: &mut Rng, draw: Draw) -> String {
    match draw {
        Draw::Same => train_user_name(rng),
        Draw::New => rng.pick(NEW_USER_NAMES).to_string(),
    }
}

pub fn order_note(rng: &mut Rng, draw: Draw) -> String {
    match draw {
        Draw::Same => rng.pick(NOTES).to_string(),
        Draw::New => rng.pick(NEW_NOTES).to_string(),
    }
}

fn sort(rng: &mut Rng, draw: Draw) -> &'static str {
    match draw {
        Draw::Same => rng.pick(&["price", "name", "newest"]),
        Draw::New => rng.pick(&["rating", "popularity", "price_desc", "bestselling"]),
    }
}

pub fn bio(rng: &mut Rng, draw: Draw) -> String {
    match draw {
        Draw::Same => rng.pick(BIOS).to_string(),
        Draw::New => rng.pick(NEW_BIOS).to_string(),
    }
}

/// The endpoints, in proportion: index into this by a random number.
const ENDPOINTS: u64 = 9;

/// One benign request of the shop.
pub fn benign(rng: &mut Rng, draw: Draw) -> Req {
    let req = match rng.below(ENDPOINTS) {
        0 | 1 => {
            let mut t = format!(
                "/api/products?category={}&page={}",
                rng.pick(CATEGORIES),
                rng.range(1, 40)
            );
            if rng.chance(60) {
                t.push_str(&format!("&sort={}", sort(rng, draw)));
            }
            Req::get(t)
        }
        2 => Req::get(format!("/api/products/{}", rng.range(1, 99_999))),
        3 => {
            let mut t = format!("/api/search?q={}", form_encode(&search_text(rng, draw)));
            if rng.chance(30) {
                t.push_str(&format!("&page={}", rng.range(1, 9)));
            }
            Req::get(t)
        }
        4 => Req::get(format!(
            "/api/users/{}/profile",
            path_encode(&user_name(rng, draw))
        )),
        5 => Req::get(format!(
            "/api/users/{}/orders?since={}",
            path_encode(&user_name(rng, draw)),
            date(rng)
        )),
        6 => Req::get(format!("/api/orders/{}", rng.uuid())),
        7 => {
            let body = format!(
                "{{\"display_name\":{},\"email\":{},\"bio\":{},\"newsletter\":{}}}",
                json_str(&display_name(rng, draw)),
                json_str(&email(rng, draw)),
                json_str(&bio(rng, draw)),
                rng.chance(50)
            );
            Req::send(
                "PUT",
                format!("/api/users/{}/profile", path_encode(&user_name(rng, draw))),
                "application/json",
                body.into_bytes(),
            )
        }
        _ => Req::send(
            "POST",
            "/api/orders",
            "application/json",
            order(rng, draw, None).into_bytes(),
        ),
    };
    headers(rng, req, draw)
}

/// An order body; `note` replaces the generated note.
pub fn order(rng: &mut Rng, draw: Draw, note: Option<&str>) -> String {
    let items: Vec<String> = (0..rng.range(1, 4))
        .map(|_| {
            format!(
                "{{\"sku\":\"{}-{}\",\"qty\":{}}}",
                rng.pick(&["AB", "CX", "KT", "ZZ", "MB"]),
                rng.range(1000, 9999),
                rng.range(1, 6)
            )
        })
        .collect();
    let note = note
        .map(str::to_string)
        .unwrap_or_else(|| order_note(rng, draw));
    format!(
        "{{\"items\":[{}],\"note\":{},\"coupon\":{},\"address\":{{\"name\":{},\"street\":{},\"city\":{},\"postcode\":{},\"country\":\"{}\"}},\"email\":{}}}",
        items.join(","),
        json_str(&note),
        json_str(rng.pick(&["", "", "SPRING10", "WELCOME5", "FREESHIP"])),
        json_str(&display_name(rng, draw)),
        json_str(&street(rng, draw)),
        json_str(&city(rng, draw)),
        json_str(&postcode(rng, draw)),
        rng.pick(&["US", "DE", "NL", "FR"]),
        json_str(&email(rng, draw)),
    )
}

/// Builds a shop request carrying `payload` at injection point `at` (see `POINTS`).
pub fn inject(rng: &mut Rng, at: &str, payload: &str) -> Req {
    let req = match at {
        "query.q" => Req::get(format!("/api/search?q={}", form_encode(payload))),
        "query.sort" => Req::get(format!(
            "/api/products?category=shoes&page=2&sort={}",
            form_encode(payload)
        )),
        "query.category" => Req::get(format!("/api/products?category={}&page=1", form_encode(payload))),
        "path.user" => Req::get(format!("/api/users/{}/profile", path_encode(payload))),
        "path.id" => Req::get(format!("/api/products/{}", path_encode(payload))),
        "json.note" => Req::send("POST", "/api/orders", "application/json", order(rng, Draw::Same, Some(payload)).into_bytes()),
        "json.bio" => Req::send(
            "PUT",
            "/api/users/anna/profile",
            "application/json",
            format!(
                "{{\"display_name\":\"Anna Berg\",\"email\":\"anna@example.com\",\"bio\":{},\"newsletter\":true}}",
                json_str(payload)
            )
            .into_bytes(),
        ),
        "json.display_name" => Req::send(
            "PUT",
            "/api/users/anna/profile",
            "application/json",
            format!(
                "{{\"display_name\":{},\"email\":\"anna@example.com\",\"bio\":\"hi\",\"newsletter\":true}}",
                json_str(payload)
            )
            .into_bytes(),
        ),
        "header.user-agent" => {
            return Req::get("/api/products/42")
                .header("user-agent", payload)
                .header("accept", "application/json")
                .header("accept-language", "en-US,en;q=0.9")
        }
        _ => Req::get(format!("/api/search?q={}", form_encode(payload))),
    };
    headers(rng, req, Draw::Same)
}

/// Injection points of the shop, with the generator of the field's training values.
pub const POINTS: &[Point] = &[
    ("query.q", |r| search_text(r, Draw::Same)),
    ("query.sort", |r| sort(r, Draw::Same).to_string()),
    ("path.user", |r| user_name(r, Draw::Same)),
    ("path.id", |r| r.range(1, 99_999).to_string()),
    ("json.note", |r| order_note(r, Draw::Same)),
    ("json.bio", |r| bio(r, Draw::Same)),
    ("json.display_name", |r| display_name(r, Draw::Same)),
];
