//! Hostile inputs: bad YAML, huge inputs, deep nesting, alias bombs and random mutations are all
//! rejected with a diagnostic, without panicking; the parser's budgets (nodes, depth, size),
//! whose diagnostics these tests check, are what bound its work (no timing is asserted).

use palisade_policy::{parse_policies, parse_policies_with, Diagnostics, Limits};

#[track_caller]
fn rejected(bytes: &[u8]) -> Diagnostics {
    let result = parse_policies(bytes);
    match result {
        Ok(p) => panic!("expected a rejection, got {} policies", p.policies.len()),
        Err(d) => {
            assert!(d.has_errors(), "rejected without an error: {d:?}");
            d
        }
    }
}

fn first_message(d: &Diagnostics) -> String {
    d.errors()
        .next()
        .map(|e| e.message.clone())
        .unwrap_or_default()
}

const VALID: &str = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\n  namespace: ns\nspec:\n  selector:\n    matchLabels:\n      app: web\n  file:\n    matchPaths:\n    - path: /etc/shadow\n  action: Block\n";

#[test]
fn malformed_yaml_is_rejected_with_a_position() {
    for bad in [
        "spec: [\n",
        "spec:\n\t- tab\n",
        "a: b: c\n",
        "key: \"unterminated\n",
        "- a\nb: c\n",
        "&a [*b]\n",
    ] {
        let d = rejected(bad.as_bytes());
        let e = d.errors().next().expect("an error");
        assert!(e.location.is_some(), "{bad:?}: {e}");
    }
}

#[test]
fn non_mapping_documents_are_rejected() {
    for bad in [
        "just a string\n",
        "- a\n- b\n",
        "42\n",
        "!!binary aGVsbG8=\n",
    ] {
        let d = rejected(bad.as_bytes());
        assert_eq!(d.errors().next().expect("an error").path, ".", "{bad:?}");
    }
}

#[test]
fn invalid_utf8_and_binary_garbage_are_rejected() {
    rejected(&[0xff, 0xfe, 0x00, 0x41, 0x80, 0x81]);
    let mut garbage = VALID.as_bytes().to_vec();
    garbage.insert(20, 0xc3);
    rejected(&garbage);
    rejected(&[0u8; 64]);
}

#[test]
fn ten_megabyte_input_is_refused_before_parsing() {
    let mut big = VALID.as_bytes().to_vec();
    big.resize(10 * 1024 * 1024, b'#');
    let d = rejected(&big);
    assert_eq!(
        first_message(&d),
        "input is 10485760 bytes, limit is 1048576"
    );
}

#[test]
fn ten_megabytes_within_a_raised_size_limit_still_hits_the_budget() {
    let limits = Limits {
        max_input_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    };
    // Many small rules: the node budget stops the walk.
    let mut many = String::from(VALID);
    many.push_str("  process:\n    matchPaths:\n");
    while many.len() < 10 * 1024 * 1024 {
        many.push_str("    - path: /bin/a\n");
    }
    let d = parse_policies_with(many.as_bytes(), &limits).expect_err("over budget");
    assert!(
        first_message(&d).starts_with("input expands to more than 200000 YAML nodes"),
        "{d}"
    );
    // One huge scalar: the byte budget stops it.
    let huge = format!("{VALID}  message: {}\n", "x".repeat(10 * 1024 * 1024));
    let d = parse_policies_with(huge.as_bytes(), &limits).expect_err("over budget");
    assert!(
        first_message(&d).starts_with("input expands to more than 4194304 bytes of scalars"),
        "{d}"
    );
}

#[test]
fn deep_nesting_is_bounded() {
    let depth = 50_000;
    let seq = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let d = rejected(seq.as_bytes());
    assert!(
        first_message(&d).contains("recursion limit exceeded"),
        "{d}"
    );

    let mut map = String::new();
    for level in 0..1_000 {
        map.push_str(&" ".repeat(level));
        map.push_str("a:\n");
    }
    let d = rejected(map.as_bytes());
    assert!(
        first_message(&d).contains("recursion limit exceeded"),
        "{d}"
    );

    let flow = format!("spec: {}{}\n", "{a: ".repeat(1000), "}".repeat(1000));
    rejected(flow.as_bytes());
}

/// Asserts that `yaml` is refused for the size it expands to.
fn rejected_as_too_large(yaml: &[u8]) {
    let d = rejected(yaml);
    let msg = first_message(&d);
    assert!(
        msg.starts_with("input expands to more than") || msg == "repetition limit exceeded",
        "{msg}"
    );
}

#[test]
fn billion_laughs_is_bounded() {
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        let refs = vec![format!("*{prev}"); 10].join(",");
        bomb.push_str(&format!("{next}: &{next} [{refs}]\n"));
    }
    rejected_as_too_large(bomb.as_bytes());

    // The same bomb inside a policy: the budget fires before any field is looked at.
    let mut in_policy = String::from(VALID);
    in_policy.push_str("  tags: &t0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    in_policy.push_str("  selector:\n    matchLabels: &t1 {");
    let refs: Vec<String> = (0..10)
        .map(|i| format!("k{i}: [*t0, *t0, *t0, *t0, *t0, *t0, *t0, *t0, *t0, *t0]"))
        .collect();
    in_policy.push_str(&refs.join(", "));
    in_policy.push_str("}\n");
    for level in 2..8 {
        let prev = level - 1;
        let refs = vec![format!("*t{prev}"); 10].join(", ");
        in_policy.push_str(&format!("  x{level}: &t{level} [{refs}]\n"));
    }
    rejected_as_too_large(in_policy.as_bytes());
}

#[test]
fn aliases_in_legitimate_use_still_work() {
    let yaml = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\n  namespace: ns\nspec:\n  selector:\n    matchLabels:\n      app: web\n  tags: &common [PCI, NIST]\n  file:\n    tags: *common\n    matchPaths:\n    - path: /etc/shadow\n      fromSource: &src\n      - path: /bin/login\n    - path: /etc/gshadow\n      fromSource: *src\n";
    let p = parse_policies(yaml.as_bytes()).expect("valid");
    let rules = &p.policies[0].file;
    assert_eq!(rules[1].from_source, rules[0].from_source);
    assert_eq!(rules[1].meta.tags, ["PCI", "NIST"]);
}

#[test]
fn too_many_documents_rules_and_sources() {
    let many_docs = "---\n{}\n".repeat(300);
    let d = rejected(many_docs.as_bytes());
    assert_eq!(first_message(&d), "input has more than 256 YAML documents");

    let mut many_rules = String::from(VALID);
    many_rules.push_str("  process:\n    matchPaths:\n");
    for i in 0..1100 {
        many_rules.push_str(&format!("    - path: /bin/p{i}\n"));
    }
    let d = rejected(many_rules.as_bytes());
    let e = d.find("spec").expect("spec error");
    assert_eq!(e.message, "has 1101 rules, limit is 1024");

    let mut many_sources = String::from(VALID);
    many_sources.push_str("  process:\n    matchPaths:\n    - path: /bin/x\n      fromSource:\n");
    for i in 0..70 {
        many_sources.push_str(&format!("      - path: /bin/s{i}\n"));
    }
    let d = rejected(many_sources.as_bytes());
    let e = d
        .find("spec.process.matchPaths[0].fromSource")
        .expect("fromSource error");
    assert_eq!(e.message, "has 70 entries, limit is 64");
}

/// xorshift64*: deterministic, so a failure reproduces from the printed case number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "- ",
    ": ",
    "\n  ",
    "\n",
    "[",
    "]",
    "{",
    "}",
    "!!binary ",
    "---\n",
    "\t",
    "\0",
    "\u{feff}",
    "'",
    "\"",
    "#",
    "? ",
    "|\n",
    ">\n",
    "<<: *a\n",
    "~",
    "..",
    "/",
    "**",
    "path: ",
    "dir: ",
    "fromSource:\n",
    "recursive: true",
    "action: Allow",
    "severity: 99",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if !out.is_empty() => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            1 => {
                let byte = u8::try_from(rng.next() & 0xff).unwrap_or(0);
                out.insert(at, byte);
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.bytes());
            }
            3 if !out.is_empty() => {
                let from = rng.below(out.len());
                let end = (from + rng.below(64)).min(out.len());
                let chunk = out[from..end].to_vec();
                out.splice(at..at, chunk);
            }
            _ => {
                if let Some(b) = out.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
    }
    out
}

#[test]
fn random_mutations_never_panic() {
    let seeds: Vec<Vec<u8>> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
            .expect("fixtures")
            .map(|e| std::fs::read(e.expect("entry").path()).expect("fixture"))
            .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cases = 3000;
    let mut accepted = 0;
    for case in 0..cases {
        let seed = &seeds[case % seeds.len()];
        let input = mutate(&mut rng, seed);
        let result = std::panic::catch_unwind(|| parse_policies(&input));
        match result {
            Err(_) => panic!(
                "case {case} panicked on input {:?}",
                String::from_utf8_lossy(&input)
            ),
            Ok(Ok(parsed)) => {
                accepted += 1;
                assert!(parsed.warnings.iter().all(|w| !w.is_error()));
            }
            Ok(Err(d)) => assert!(d.has_errors(), "case {case}: rejected without an error"),
        }
    }
    // Some mutations keep the policy valid (a comment, a reordered space), most do not.
    assert!(
        accepted > 0 && accepted < cases,
        "accepted {accepted} of {cases}"
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for case in 0..2000 {
        let len = rng.below(512);
        let input: Vec<u8> = (0..len)
            .map(|_| u8::try_from(rng.next() >> 56).unwrap_or(0))
            .collect();
        let result = std::panic::catch_unwind(|| parse_policies(&input));
        assert!(result.is_ok(), "case {case} panicked");
    }
}

#[test]
fn a_flood_of_problems_is_capped_errors_first() {
    let mut many = String::from(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\nmetadata:\n  name: p\n  namespace: ns\nspec:\n  selector:\n    matchLabels:\n      app: web\n  file:\n    matchPaths:\n",
    );
    // Each rule is relative (an error) and unnormalized (a warning).
    for i in 0..1000 {
        many.push_str(&format!("    - path: a//b{i}\n"));
    }
    let d = rejected(many.as_bytes());
    assert_eq!(d.items.len(), 1001);
    assert!(d.items[..1000].iter().all(|e| e.is_error()));
    let last = d.items.last().expect("summary");
    assert_eq!(last.message, "1000 more problems not shown");
    assert!(last.is_error());
}
