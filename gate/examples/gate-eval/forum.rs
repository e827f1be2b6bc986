//! The second service: a form-based web forum (HTML pages, a session cookie, urlencoded
//! login, registration and reply forms, threads by id and slug, search by text and author).

use crate::corpus::{form, form_encode, path_encode, Point, Req, Rng};
use crate::shop::Draw;
use crate::values::*;

const TAGS: &[&str] = &[
    "general", "help", "news", "offtopic", "meta", "howto", "events",
];

const REPLIES: &[&str] = &[
    "thanks, that worked for me",
    "same here. any update?",
    "I had this too - a restart fixed it",
    "+1, would love this feature",
    "see the FAQ (section 3)",
    "great post! bookmarked",
    "which version are you on?",
    "not sure, but try clearing the cache; then log in again",
    "agreed :)",
    "welcome to the forum!",
    "can you post a screenshot?",
    "this is the way",
    "nope, still broken on 2.4",
    "50/50 chance it is the router",
    "lol, same",
    "I'd check the logs first",
];

const NEW_REPLIES: &[&str] = &[
    "merci beaucoup, ça marche !",
    "спасибо, помогло",
    "ありがとうございます",
    "it's fixed in v2.5 & works fine",
    "Q&A thread is here",
    "my 2¢: don't bother",
    "see @mods' note above",
    "use ctrl+shift+r for a hard reload",
    "😀 nice",
    "rock & roll!",
    "¿alguien sabe por qué?",
    "100% agree -- well said",
];

fn slug(rng: &mut Rng, draw: Draw) -> String {
    let words: &[&str] = if draw == Draw::New {
        NEW_SHOP_WORDS
    } else {
        SHOP_WORDS
    };
    (0..rng.range(2, 5))
        .map(|_| rng.pick(words).to_string())
        .collect::<Vec<_>>()
        .join("-")
}

pub fn reply(rng: &mut Rng, draw: Draw) -> String {
    match draw {
        Draw::Same => rng.pick(REPLIES).to_string(),
        Draw::New => rng.pick(NEW_REPLIES).to_string(),
    }
}

pub fn search_text(rng: &mut Rng, draw: Draw) -> String {
    match draw {
        Draw::Same => rng.words(SHOP_WORDS, 1, 3),
        Draw::New => new_text(rng, NEW_SHOP_WORDS, NEW_SEARCHES),
    }
}

/// Passwords: letters, digits and the punctuation people put in passwords.
pub fn password(rng: &mut Rng) -> String {
    let n = rng.range(8, 14) as usize;
    let mut p = rng.alnum(n);
    for _ in 0..rng.range(0, 2) {
        p.push(
            rng.pick(&["!", "?", "#", "$", "%", "*", "&", "@", "."])
                .chars()
                .next()
                .unwrap_or('!'),
        );
    }
    p
}

fn browser(rng: &mut Rng, req: Req, draw: Draw) -> Req {
    let mut req = client_headers(rng, req, draw, |_| {
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    });
    if rng.chance(80) {
        req = req.header(
            "cookie",
            format!(
                "session={}; theme={}",
                rng.hex(32),
                rng.pick(&["dark", "light"])
            ),
        );
    }
    if rng.chance(50) {
        req = req.header(
            "referer",
            format!("https://forum.test/threads?page={}", rng.range(1, 20)),
        );
    }
    req
}

fn form_post(target: impl Into<String>, body: String) -> Req {
    Req::send(
        "POST",
        target,
        "application/x-www-form-urlencoded",
        body.into_bytes(),
    )
}

/// One benign request of the forum.
pub fn benign(rng: &mut Rng, draw: Draw) -> Req {
    let req = match rng.below(10) {
        0 => Req::get("/"),
        1 => Req::get(format!(
            "/threads?page={}&tag={}",
            rng.range(1, 60),
            rng.pick(TAGS)
        )),
        2 | 3 => Req::get(format!(
            "/threads/{}/{}",
            rng.range(100, 9999),
            slug(rng, draw)
        )),
        4 => {
            let mut t = format!("/search?q={}", form_encode(&search_text(rng, draw)));
            if rng.chance(30) {
                t.push_str(&format!("&author={}", form_encode(&user_name(rng, draw))));
            }
            Req::get(t)
        }
        5 => Req::get(format!("/u/{}", path_encode(&user_name(rng, draw)))),
        6 => form_post(
            "/login",
            form(&[
                ("username", user_name(rng, draw)),
                ("password", password(rng)),
                ("remember", "on".into()),
                ("csrf", rng.hex(32)),
            ]),
        ),
        7 => form_post(
            format!("/threads/{}/reply", rng.range(100, 9999)),
            form(&[("body", reply(rng, draw)), ("csrf", rng.hex(32))]),
        ),
        8 => form_post(
            "/register",
            form(&[
                ("username", user_name(rng, draw)),
                ("email", email(rng, draw)),
                ("password", password(rng)),
                ("display_name", display_name(rng, draw)),
                ("postcode", postcode(rng, draw)),
                ("csrf", rng.hex(32)),
            ]),
        ),
        _ => Req::get(format!(
            "/static/{}",
            rng.pick(&[
                "css/app.css",
                "js/app.js",
                "js/vendor.js",
                "img/logo.png",
                "css/print.css"
            ])
        )),
    };
    browser(rng, req, draw)
}

fn user_name(rng: &mut Rng, draw: Draw) -> String {
    match draw {
        Draw::Same => train_user_name(rng),
        Draw::New => rng.pick(NEW_USER_NAMES).to_string(),
    }
}

/// Builds a forum request carrying `payload` at injection point `at` (see `POINTS`).
pub fn inject(rng: &mut Rng, at: &str, payload: &str) -> Req {
    let req = match at {
        "form.username" => form_post(
            "/login",
            form(&[
                ("username", payload.to_string()),
                ("password", password(rng)),
                ("remember", "on".into()),
                ("csrf", rng.hex(32)),
            ]),
        ),
        "form.password" => form_post(
            "/login",
            form(&[
                ("username", "anna".into()),
                ("password", payload.to_string()),
                ("remember", "on".into()),
                ("csrf", rng.hex(32)),
            ]),
        ),
        "form.body" => form_post(
            "/threads/1234/reply",
            form(&[("body", payload.to_string()), ("csrf", rng.hex(32))]),
        ),
        "query.author" => Req::get(format!("/search?q=bike&author={}", form_encode(payload))),
        "path.slug" => Req::get(format!("/threads/1234/{}", path_encode(payload))),
        "path.user" => Req::get(format!("/u/{}", path_encode(payload))),
        "query.tag" => Req::get(format!("/threads?page=2&tag={}", form_encode(payload))),
        "header.cookie" => {
            return Req::get("/threads?page=3&tag=help")
                .header("user-agent", user_agent(rng, Draw::Same))
                .header(
                    "accept",
                    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                )
                .header("accept-language", "en-US,en;q=0.9")
                .header("cookie", format!("session={payload}; theme=dark"))
        }
        _ => Req::get(format!("/search?q={}", form_encode(payload))),
    };
    browser(rng, req, Draw::Same)
}

/// Injection points of the forum, with the generator of the field's training values.
pub const POINTS: &[Point] = &[
    ("query.q", |r| search_text(r, Draw::Same)),
    ("form.username", train_user_name),
    ("form.password", password),
    ("form.body", |r| reply(r, Draw::Same)),
    ("path.slug", |r| slug(r, Draw::Same)),
    ("query.author", train_user_name),
];
