//! Feeds arbitrary bytes to the policy parser, then selects, compiles and decides on whatever loads:
//! none of it may panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_policy::{compile_for, parse_policies, CompileOptions, Exec, FileAccess, Workload};

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_policies(data) else {
        return;
    };
    for policy in &parsed.policies {
        let workload = Workload {
            namespace: policy.id.namespace.clone(),
            pod_name: "pod".into(),
            container_name: "app".into(),
            image: "img".into(),
            labels: policy.selector.match_labels.clone(),
        };
        let compiled = compile_for(&parsed.policies, &workload, &CompileOptions::default());
        let path = std::str::from_utf8(data).unwrap_or("/etc/shadow");
        let _ = compiled.decide_file(&FileAccess {
            path,
            write: true,
            by_owner: false,
            source: Some("/bin/sh"),
        });
        let _ = compiled.decide_exec(&Exec {
            path,
            by_owner: false,
            source: None,
        });
        let _ = compiled.unenforceable();
    }
});
