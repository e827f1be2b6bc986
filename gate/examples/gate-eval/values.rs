//! Word lists and value generators shared by the services: the training distribution, and the
//! new but ordinary values a real service gets next week.

use crate::corpus::{Req, Rng};
use crate::shop::Draw;

pub const SHOP_WORDS: &[&str] = &[
    "red", "blue", "green", "black", "white", "grey", "wool", "cotton", "leather", "linen",
    "running", "shoes", "hat", "scarf", "jacket", "socks", "bag", "lamp", "table", "chair", "mug",
    "kettle", "phone", "case", "charger", "cable", "desk", "garden", "hose", "bike", "helmet",
    "gloves", "tent", "kids", "winter", "summer", "large", "small", "set", "boots", "coat",
    "shirt", "dress", "watch", "sofa", "pillow", "blanket", "towel", "pan", "knife",
];

pub const NEW_SHOP_WORDS: &[&str] = &[
    "trampoline",
    "espresso",
    "hoodie",
    "backpack",
    "umbrella",
    "headphones",
    "yoga",
    "mat",
    "cardigan",
    "kayak",
    "thermos",
    "skateboard",
    "beanie",
    "duvet",
    "wok",
    "candle",
];

/// Searches with what ordinary text carries: apostrophes, ampersands, other scripts.
pub const NEW_SEARCHES: &[&str] = &[
    "kids' bike",
    "men's boots",
    "women's rain coat",
    "rock & roll poster",
    "salt & pepper mill",
    "café table",
    "crème brûlée dish",
    "naïve art print",
    "São Paulo map",
    "Zürich mug",
    "чайник",
    "зимняя куртка",
    "東京 タオル",
    "茶杯",
    "커피 머그",
    "o'neill jacket",
    "5\" tablet case",
    "usb-c cable (2m)",
    "50% wool scarf",
    "ski/snowboard helmet",
    "tea & coffee set",
    "don't starve board game",
    "Ελληνικό μέλι",
    "hello kitty #1 mug",
];

pub const CATEGORIES: &[&str] = &[
    "shoes",
    "clothing",
    "home",
    "garden",
    "electronics",
    "sports",
    "toys",
    "kitchen",
];

const FIRST: &[&str] = &[
    "anna", "mike", "lee", "maria", "tom", "olga", "sam", "jonas", "emma", "noah", "lena", "paul",
    "sofia", "ivan", "lucas", "mia", "david", "sara", "omar", "nina",
];
const LAST: &[&str] = &[
    "berg", "smith", "meyer", "jansen", "novak", "dubois", "rossi", "khan", "lopez", "weber",
];

/// Training user names: letters, with digits, `_`, `.` or `-` in some.
pub fn train_user_name(rng: &mut Rng) -> String {
    let first = rng.pick(FIRST);
    match rng.below(5) {
        0 => first.to_string(),
        1 => format!("{first}{}", rng.range(1, 999)),
        2 => format!("{first}_{}", rng.pick(LAST)),
        3 => format!("{}.{first}", &rng.pick(LAST)[..1]),
        _ => format!("{first}-{}", rng.pick(LAST)),
    }
}

pub const NEW_USER_NAMES: &[&str] = &[
    "John_Doe",
    "JaneRoe",
    "zoë",
    "Jean-Luc",
    "o.brien",
    "müller_k",
    "Åsa",
    "Dmitri",
    "xiao_ming",
    "KarenW",
    "bjorn.ek",
    "rafael99",
    "Łukasz",
    "yuki_t",
];

pub fn display_name(rng: &mut Rng, draw: Draw) -> String {
    let cap = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    match draw {
        Draw::Same => format!("{} {}", cap(rng.pick(FIRST)), cap(rng.pick(LAST))),
        Draw::New => rng
            .pick(&[
                "Zoë O'Brien",
                "José Álvarez",
                "Дмитрий Иванов",
                "王小明",
                "Anne-Marie Lefèvre",
                "Siobhán Ní Bhriain",
                "Mary Jane Watson",
                "Søren Kierkegaard",
                "Nguyễn Văn An",
            ])
            .to_string(),
    }
}

pub fn email(rng: &mut Rng, draw: Draw) -> String {
    match draw {
        Draw::Same => format!(
            "{}{}@{}",
            rng.pick(FIRST),
            rng.pick(&["", ".", "_"]).to_string() + rng.pick(&["", "berg", "k", "2020", "smith"]),
            rng.pick(&["example.com", "mail.test", "example.org"])
        ),
        Draw::New => rng
            .pick(&[
                "anna+shop@example.com",
                "j.doe@sub.example.co.uk",
                "mike+orders@mail.test",
                "first.last@example.museum",
                "x_y-z@example.io",
            ])
            .to_string(),
    }
}

pub fn street(rng: &mut Rng, draw: Draw) -> String {
    match draw {
        Draw::Same => format!(
            "{} {}",
            rng.range(1, 250),
            rng.pick(&[
                "Main St",
                "Oak Avenue",
                "Hauptstrasse",
                "Kerkstraat",
                "Rue Verte",
                "Park Lane"
            ])
        ),
        Draw::New => rng
            .pick(&[
                "10 Downing Street",
                "Flat 3, 22 Baker St",
                "221B Baker Street",
                "Königsallee 12",
                "ул. Тверская, 7",
                "1-2-3 Shibuya",
                "Apt. 4 - 55 Queen's Road",
            ])
            .to_string(),
    }
}

pub fn city(rng: &mut Rng, draw: Draw) -> String {
    match draw {
        Draw::Same => rng
            .pick(&[
                "New York",
                "Berlin",
                "Amsterdam",
                "Paris",
                "Lyon",
                "Utrecht",
                "Hamburg",
                "Boston",
            ])
            .to_string(),
        Draw::New => rng
            .pick(&[
                "London",
                "Toronto",
                "Montréal",
                "Köln",
                "Москва",
                "東京",
                "St. John's",
                "Saint-Étienne",
            ])
            .to_string(),
    }
}

/// Postcodes: US, German, French and Dutch in training; UK and Canadian ones are new.
pub fn postcode(rng: &mut Rng, draw: Draw) -> String {
    match draw {
        Draw::Same => match rng.below(4) {
            0 => format!("{:05}", rng.range(1000, 99_950)),
            1 => format!("{}", rng.range(10_000, 99_999)),
            2 => format!("{:05}", rng.range(75_001, 75_020)),
            _ => format!(
                "{} {}{}",
                rng.range(1000, 9999),
                rng.pick(&["A", "B", "C", "K", "X", "Z"]),
                rng.pick(&["B", "D", "H", "R", "T"])
            ),
        },
        Draw::New => rng
            .pick(&[
                "SW1A 1AA",
                "EC1A 1BB",
                "M1 1AE",
                "B33 8TH",
                "K1A 0B1",
                "M5V 3L9",
                "H2X 1Y4",
                "90210-1234",
            ])
            .to_string(),
    }
}

pub fn date(rng: &mut Rng) -> String {
    format!("2024-{:02}-{:02}", rng.range(1, 12), rng.range(1, 28))
}

pub fn accept_language(rng: &mut Rng) -> &'static str {
    rng.pick(&[
        "en-US,en;q=0.9",
        "de-DE,de;q=0.8,en;q=0.5",
        "nl-NL,nl;q=0.9,en;q=0.8",
        "fr-FR,fr;q=0.9",
    ])
}

const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{m} Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{m} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{m} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "ShopApp/3.{m}.{v} (iOS 17.{m}; iPhone)",
    "ShopApp/3.{m}.{v} (Android 14; Pixel 8)",
];

const NEW_AGENTS: &[&str] = &[
    "curl/8.5.0",
    "curl/7.88.1",
    "python-requests/2.31.0",
    "Wget/1.21.4",
    "PostmanRuntime/7.36.0",
    "Go-http-client/1.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.51",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.58 Mobile Safari/537.36",
    "okhttp/4.12.0",
];

pub fn user_agent(rng: &mut Rng, draw: Draw) -> String {
    if draw == Draw::New && rng.chance(50) {
        return rng.pick(NEW_AGENTS).to_string();
    }
    rng.pick(BROWSERS)
        .replace("{v}", &rng.range(110, 126).to_string())
        .replace("{m}", &rng.range(0, 6).to_string())
}

/// A client's first three headers: its user-agent, the `accept` it draws next, and its
/// accept-language.
pub fn client_headers(
    rng: &mut Rng,
    req: Req,
    draw: Draw,
    accept: impl FnOnce(&mut Rng) -> &'static str,
) -> Req {
    let ua = user_agent(rng, draw);
    let accept = accept(rng);
    req.header("user-agent", ua)
        .header("accept", accept)
        .header("accept-language", accept_language(rng))
}

/// Free text of a new kind: new words, or one of `phrases`.
pub fn new_text(rng: &mut Rng, words: &[&str], phrases: &[&str]) -> String {
    if rng.chance(30) {
        rng.words(words, 1, 3)
    } else {
        rng.pick(phrases).to_string()
    }
}

pub const NOTES: &[&str] = &[
    "",
    "",
    "please leave at the door",
    "gift wrap, thanks!",
    "call before delivery (after 5pm)",
    "ring twice - the dog is friendly",
    "2nd floor; code 1234",
    "leave with the neighbour at no. 12",
    "deliver between 9 and 12 please",
    "no plastic bags please",
    "it is a birthday present, no invoice in the box",
    "back door is open (garden side)",
    "fragile! handle with care",
    "office hours only: mon-fri",
    "add a card: happy birthday, love mum",
    "parcel box at the gate",
    "ask for Maria at reception",
    "same address as last time",
    "if not home, try 2b",
    "doorbell broken, please knock",
];

pub const NEW_NOTES: &[&str] = &[
    "it's a gift: don't open",
    "deliver after 6:30pm",
    "Bitte beim Nachbarn abgeben",
    "à l'attention de Mme Dubois",
    "請放在門口",
    "no rush :)",
    "use the side gate @ the back",
    "Tom & Jerry's flat, 3rd floor",
    "позвоните за час",
    "leave it w/ the concierge",
    "door code #4521",
    "deliver 50/50 between the two addresses? thanks",
    "\"fragile\" sticker please",
    "please call +44 20 7946 0958 on arrival",
];

pub const BIOS: &[&str] = &[
    "",
    "I <3 cycling and coffee",
    "C++ & Rust developer (he/him)",
    "mum of two -> runner, baker",
    "vegan; photographer; traveller",
    "hiking > everything",
    "coffee first, questions later...",
    "designer @ studio north",
    "\"less is more\"",
    "climber, 5.11a on a good day",
    "books: 42 this year!",
    "teacher / gardener",
    "50% nerd, 50% chef",
    "ask me about sourdough?",
    "#1 fan of board games",
    "tea > coffee (fight me)",
];

pub const NEW_BIOS: &[&str] = &[
    "it's complicated",
    "père de famille, cuisinier amateur",
    "люблю горы",
    "プログラマー",
    "rock & roll forever",
    "Dad jokes [certified]",
    "PhD candidate, ML & ethics",
    "I'm on the board of the 'Friends of the Park'",
];
