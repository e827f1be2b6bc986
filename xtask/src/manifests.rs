//! Validates every Kubernetes manifest under runtimeclass/ against the Kubernetes API schemas
//! (kubernetes-validate from PyPI, installed into a cache under the run dir), strictly: unknown
//! fields, wrong types, missing required fields and kinds without a schema all fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// The validator, pinned: it bundles the schemas of the Kubernetes versions below.
pub const VALIDATOR: &str = "kubernetes-validate";
pub const VALIDATOR_VERSION: &str = "1.37.0";
/// The oldest Kubernetes the manifests must work on, and the newest the validator knows.
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Every `*.yaml` / `*.yml` under `dir`, sorted.
pub fn manifests(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let path = entry
                .with_context(|| format!("read {}", d.display()))?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A python3 with pip: the one on PATH, else Debian's.
fn python() -> Result<String> {
    for candidate in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(candidate)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(candidate.to_string());
        }
    }
    bail!("python3 -m pip: no python3 with pip found (apt-get install python3-pip)")
}

fn python_version(python: &str) -> Result<String> {
    let out = Command::new(python)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .with_context(|| format!("run {python}"))?;
    if !out.status.success() {
        bail!("{python} --version: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Installs the validator (and its dependencies) into `cache/<name>-<version>-py<X.Y>` once,
/// with `pip install --target`: no virtualenv module needed, nothing installed system-wide.
/// Returns the interpreter and the directory to put on PYTHONPATH.
fn ensure_validator(cache: &Path) -> Result<(String, PathBuf)> {
    let python = python()?;
    // Compiled dependencies (rpds-py) are built for one interpreter version.
    let dir = cache.join(format!(
        "{VALIDATOR}-{VALIDATOR_VERSION}-py{}",
        python_version(&python)?
    ));
    let done = dir.join(".installed");
    if done.exists() {
        return Ok((python, dir));
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    eprintln!(
        "xtask: pip install {VALIDATOR}=={VALIDATOR_VERSION} into {}",
        dir.display()
    );
    let st = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--target",
        ])
        .arg(&dir)
        .arg(format!("{VALIDATOR}=={VALIDATOR_VERSION}"))
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .status()
        .with_context(|| format!("run {python} -m pip"))?;
    if !st.success() {
        bail!("pip install {VALIDATOR}=={VALIDATOR_VERSION}: {st}");
    }
    std::fs::write(&done, "").with_context(|| format!("write {}", done.display()))?;
    Ok((python, dir))
}

/// Reads the validator's output: the documents that passed, or every problem it named. A
/// warning (a kind it has no schema for, a file without documents) is a failure too: every
/// manifest here must be checkable.
pub fn judge(success: bool, output: &str) -> Result<usize> {
    let passed = output
        .lines()
        .filter(|l| l.starts_with("INFO ") && l.contains(" passed for resource "))
        .count();
    let problems: Vec<&str> = output
        .lines()
        .filter(|l| !l.starts_with("INFO "))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if !success || !problems.is_empty() {
        bail!(
            "{}",
            if problems.is_empty() {
                "the validator failed without saying why".to_string()
            } else {
                problems.join("\n")
            }
        );
    }
    if passed == 0 {
        bail!("no document was validated");
    }
    Ok(passed)
}

/// Validates every manifest under `root/runtimeclass` for each of [`KUBERNETES_VERSIONS`];
/// returns how many documents passed in all.
pub fn validate(root: &Path, cache: &Path) -> Result<usize> {
    let files = manifests(&root.join("runtimeclass"))?;
    if files.is_empty() {
        bail!("no manifests under {}", root.join("runtimeclass").display());
    }
    let (python, dir) = ensure_validator(cache)?;
    let mut total = 0;
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(&python)
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .args(&files)
            .env("PYTHONPATH", &dir)
            .current_dir(root)
            .output()
            .context("run kubernetes-validate")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let n = judge(out.status.success(), &text)
            .with_context(|| format!("manifests against Kubernetes {version}"))?;
        eprintln!(
            "xtask: {n} Kubernetes objects in {} files valid for Kubernetes {version}",
            files.len()
        );
        total += n;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn judge_counts_passes_and_fails_on_any_problem() {
        let ok = "INFO a.yaml passed for resource runtimeclass/palisade against version 1.30.0\n\
                  INFO a.yaml passed for resource pod/web against version 1.30.0\n";
        assert_eq!(judge(true, ok).unwrap(), 2);

        let err = format!(
            "{ok}ERROR b.yaml did not validate for resource daemonset/x against version 1.30.0: spec.template.spec.hostPID: 'yes' is not of type 'boolean', 'null'\n"
        );
        let e = judge(false, &err).unwrap_err().to_string();
        assert!(e.starts_with("ERROR b.yaml did not validate"), "{e}");

        let warn = format!(
            "{ok}WARN c.yaml Couldn't find schema for kind Widget with api version example.com/v1 for kubernetes version 1.30.0\n"
        );
        let e = judge(true, &warn).unwrap_err().to_string();
        assert!(e.contains("Couldn't find schema for kind Widget"), "{e}");

        let parse = "Couldn't parse YAML from file d.yaml: while parsing a flow node\n";
        assert!(judge(false, parse).is_err());
        assert!(judge(true, "").is_err(), "nothing validated is a failure");
        assert!(judge(false, ok).is_err(), "a failing exit status fails");
    }

    #[test]
    fn manifests_finds_every_yaml_below() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtimeclass");
        let found = manifests(&root).unwrap();
        let names: Vec<String> = found
            .iter()
            .map(|p| {
                p.strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        for want in [
            "runtimeclass.yaml",
            "deploy/palisade-deploy.yaml",
            "deploy/palisade-cleanup.yaml",
            "examples/palisade-web.yaml",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(names
            .iter()
            .all(|n| n.ends_with(".yaml") || n.ends_with(".yml")));
    }
}
