//! The short form of `gate-eval`: a smaller generated corpus of both services, learned through
//! the gate on loopback and then sent in block mode, must meet the detection targets.
#![allow(dead_code)]

#[path = "../examples/gate-eval/attacks.rs"]
mod attacks;
#[path = "../examples/gate-eval/corpus.rs"]
mod corpus;
#[path = "../examples/gate-eval/eval.rs"]
mod eval;
#[path = "../examples/gate-eval/forum.rs"]
mod forum;
#[path = "../examples/gate-eval/generate.rs"]
mod generate;
#[path = "../examples/gate-eval/run.rs"]
mod run;
#[path = "../examples/gate-eval/shop.rs"]
mod shop;
#[path = "../examples/gate-eval/values.rs"]
mod values;

use anyhow::Result;
use corpus::{Attack, Class};

#[test]
fn block_mode_after_learning_meets_the_targets() -> Result<()> {
    let mut all = eval::Tally::default();
    for service in generate::services() {
        let samples = generate::corpus(service, 11, generate::Sizes::SHORT);
        let (tally, _) = eval::through_gate(&samples)?;
        all.merge(tally);
    }
    for class in Attack::ALL {
        assert!(
            all.counts[&Class::Attack(class)].0 > 0,
            "{class:?} has samples"
        );
    }
    let (n, refused) = all.attack_rate();
    let classic = refused as f64 / n as f64;
    let fitting = all.rate(Class::ShapeFit);
    let benign = all.rate(Class::Benign);
    let new = all.rate(Class::NewOrdinary);
    let detail = format!(
        "classic {classic:.4} fitting {fitting:.4} benign {benign:.4} new {new:.4}\nfalse positives: {:#?}\nmissed: {:#?}",
        all.false_positives, all.missed
    );
    assert!(all.counts[&Class::ShapeFit].0 >= 20, "{detail}");
    assert!(classic >= 0.99, "{detail}");
    assert!(fitting >= 0.90, "{detail}");
    assert!(benign <= 0.001, "{detail}");
    assert!(new <= 0.02, "{detail}");
    Ok(())
}
