//! What the sandbox's test suites share: their policies compiled for the one workload they
//! all describe.

use anyhow::Result;

/// The text of `sandbox/tests/policies/NAME.yaml`, the suites' shared policies.
macro_rules! policy_file {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/policies/",
            $name,
            ".yaml"
        ))
    };
}
use palisade_policy::{compile, parse_policies, CompileOptions, CompiledPolicy, Workload};

/// `yaml`'s policies compiled for the suites' container: demo/web-0, container `web`,
/// labelled `app: web`, running `image`.
pub fn policy_for(yaml: &str, image: &str, options: &CompileOptions) -> Result<CompiledPolicy> {
    let parsed = parse_policies(yaml.as_bytes()).map_err(|d| anyhow::anyhow!("{d}"))?;
    let refs: Vec<_> = parsed.policies.iter().collect();
    let workload = Workload {
        namespace: "demo".into(),
        pod_name: "web-0".into(),
        container_name: "web".into(),
        image: image.into(),
        labels: [("app".to_owned(), "web".to_owned())].into(),
    };
    Ok(compile(&refs, &workload, options))
}
