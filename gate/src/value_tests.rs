//! Tests of the field models (`value.rs`).

use super::*;

fn learned(values: &[&str]) -> ValueProfile {
    let mut p = ValueProfile::default();
    for v in values {
        p.learn(&ValueSample::of(v));
    }
    p
}

fn reasons(p: &ValueProfile, v: &str) -> Vec<String> {
    let mut r = Vec::new();
    p.check(&ValueSample::of(v), "f", &mut r);
    assert_eq!(p.accepts(&ValueSample::of(v)), r.is_empty(), "{v}: {r:?}");
    r
}

#[test]
fn values_get_their_narrowest_kind() {
    let narrowest = |v: &str| kind_names(ValueSample::of(v).narrowest());
    assert_eq!(narrowest("42"), "integer");
    assert_eq!(narrowest("-3.50"), "decimal");
    assert_eq!(narrowest("0b7c6f1e-2d3a-4f5b-9c8d-7e6f5a4b3c2d"), "uuid");
    assert_eq!(narrowest("anna+shop@example.com"), "email");
    assert_eq!(narrowest("2024-05-01T10:00:00Z"), "date/time");
    assert_eq!(narrowest("John_Doe"), "identifier");
    assert_eq!(narrowest("zoë"), "identifier", "letters by category");
    assert_eq!(narrowest("Łukasz"), "identifier");
    assert_eq!(narrowest("東京"), "identifier");
    assert_eq!(narrowest("kids' bike"), "free text");
    assert_eq!(
        ValueSample::of("12").kinds & TEXT,
        TEXT,
        "every value is text too"
    );
}

#[test]
fn a_value_breaks_a_field_by_its_kind_not_by_being_new() {
    let ids = learned(&["12", "907", "4410", "77"]);
    assert!(
        reasons(&ids, "99123").is_empty(),
        "a longer id is still an id"
    );
    assert_eq!(
        reasons(&ids, "12 or 1=1")[0],
        "f: free text value where integer was learned"
    );
    let names = learned(&["anna", "mike_t", "j.smith", "lee42", "maria-k"]);
    for v in ["John_Doe", "zoë", "Jean-Luc", "Łukasz", "o.brien"] {
        assert!(reasons(&names, v).is_empty(), "{v}");
    }
    assert!(!reasons(&names, "anna' or 'x").is_empty());
    let emails = learned(&["anna@example.com", "mike.k@mail.test"]);
    assert!(reasons(&emails, "anna+shop@example.com").is_empty());
    let sort = learned(&["price", "name", "newest", "price", "name"]);
    assert!(
        reasons(&sort, "price_desc").is_empty(),
        "joiners are tolerated"
    );
    assert!(reasons(&sort, "rating").is_empty());
    assert!(!reasons(&sort, "price;drop").is_empty());
}

#[test]
fn free_text_earns_prose_punctuation_from_variety() {
    let few = learned(&["red shoes", "blue hat"]);
    assert_eq!(reasons(&few, "kids' bike"), vec!["f: new punctuation '''"]);
    let varied = learned(&[
        "red shoes",
        "blue hat",
        "wool socks",
        "warm coat",
        "green lamp",
        "garden hose",
        "kids bike",
        "desk chair",
    ]);
    assert!(varied.is_varied_text());
    for v in [
        "kids' bike",
        "rock & roll",
        "café table",
        "чайник",
        "東京 タオル",
        "50% wool",
        "my 2¢",
    ] {
        assert!(
            reasons(&varied, v).is_empty(),
            "{v}: {:?}",
            reasons(&varied, v)
        );
    }
    // Never tolerated: markup, template, lookup and shell characters, controls, invisibles.
    assert!(reasons(&varied, "a < b").contains(&"f: new punctuation '<'".to_string()));
    assert!(reasons(&varied, "x=1").contains(&"f: new punctuation '='".to_string()));
    assert!(reasons(&varied, "a\r\nb").contains(&"f: new control character".to_string()));
    assert!(reasons(&varied, "pay\u{202E}lah")
        .contains(&"f: new invisible or direction-changing character".to_string()));
    // Injections made of tolerated characters are judged by their structure.
    assert_eq!(
        reasons(&varied, "anna' or 'x"),
        vec!["f: sql: quote closed then a condition"]
    );
    assert_eq!(
        reasons(&varied, "x; cat /etc/passwd"),
        vec![
            "f: shell: command after a separator",
            "f: path: system file"
        ]
    );
}

#[test]
fn length_has_room_but_not_unbounded() {
    let q = learned(&[
        "red shoes",
        "blue hat",
        "a b c d e f",
        "x y",
        "one two",
        "a",
        "bb",
    ]);
    assert!(reasons(&q, &"word ".repeat(8)).is_empty());
    assert_eq!(
        reasons(&q, &"a".repeat(5000)),
        vec!["f: 5000 characters, learned at most 11"]
    );
}

#[test]
fn merge_and_normalize_keep_the_model_bounded() {
    let mut a = learned(
        &(0..40)
            .map(|i| format!("v{i}"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(a.distinct.len(), DISTINCT);
    let b = learned(&["hello world"]);
    a.merge(&b);
    assert_eq!(a.distinct.len(), DISTINCT);
    assert!(a.accepts(&ValueSample::of("hello world")));
    a.kinds = 0xFF;
    a.grammar = u32::MAX;
    a.normalize();
    assert_eq!(a.kinds, 0x7F);
    assert_eq!(a.grammar, (1 << grammar::NAMES.len()) - 1);
}

#[test]
fn enums_are_named_as_such() {
    let mut p = ValueProfile::default();
    for i in 0..40 {
        p.learn(&ValueSample::of(["asc", "desc"][i % 2]));
    }
    assert_eq!(p.kind(), "enum of 2 values (identifier)");
    assert_eq!(
        reasons(&p, "asc limit 1")[0],
        "f: free text value where enum of 2 values (identifier) was learned"
    );
}
