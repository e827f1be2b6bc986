//! The demo's gate step: learn a service from ordinary requests, then block an injection with
//! its reasons and forward an ordinary request it never saw.

use anyhow::{bail, Context as _, Result};

use crate::security::eventlog::{field, get, EventLog};
use crate::security::gate::{
    attacks, expect_forwarded, gated_pod, is_gate_event_of, page_request, remove, write_www,
    EVENT_WAIT, FRESH_WORDS, LEARN_EACH, LEARN_WORDS,
};
use crate::suite::Ctx;

pub async fn show(ctx: &Ctx) -> Result<()> {
    let www = write_www(&ctx.dir)?;
    let (learn, _, addr) = gated_pod(ctx, &www, Some("learn")).await?;
    for n in 0..LEARN_EACH {
        let w = LEARN_WORDS[(n * 7) % LEARN_WORDS.len()];
        expect_forwarded(addr, &page_request(w, n)).await?;
    }
    println!(
        "     learning: {LEARN_EACH} ordinary requests like GET {} (all forwarded); the pod \
         goes and its profile stays with the service",
        page_request(LEARN_WORDS[0], 0)
    );
    remove(ctx, &learn).await?;
    let (_block, name, addr) = gated_pod(ctx, &www, Some("block")).await?;
    let log = EventLog::mark(ctx)?;
    let (family, attack) = attacks()
        .into_iter()
        .next()
        .context("the gate checks list no attack")?;
    let r = get(addr, &attack).await?;
    println!("     block mode, {family}: GET {attack} -> {}", r.status);
    if r.status != 403 {
        bail!("the gate answered {} to the {family} request", r.status);
    }
    let id = r.header("x-request-id").unwrap_or("").to_string();
    let ev = log
        .wait_for(EVENT_WAIT, |e| {
            is_gate_event_of(e, &name) && field(e, "/evidence/request_id") == id
        })
        .await?
        .with_context(|| format!("no gate event for refused request {id}"))?;
    if let Some(reasons) = ev.pointer("/evidence/reasons").and_then(|r| r.as_array()) {
        for reason in reasons {
            println!(
                "       reason: {}",
                reason
                    .as_str()
                    .map_or_else(|| reason.to_string(), str::to_string)
            );
        }
    }
    let benign = page_request(FRESH_WORDS[0], 3);
    expect_forwarded(addr, &benign)
        .await
        .context("block mode, ordinary request")?;
    println!("     block mode, an ordinary request it never saw: GET {benign} -> 200 (forwarded)");
    Ok(())
}
