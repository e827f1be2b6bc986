//! Putting `palisade-init` in front of a container's processes: read-only bind mounts and argv.
//!
//! The binary and its plan are bind-mounted read-only under [`INIT_DIR`], and every process
//! (the init and each exec) starts as `palisade-init --plan <plan> -- <its own argv>`, so the
//! plan is applied before the workload runs a single instruction of its own.

use std::path::Path;

use serde_json::{json, Value};

/// Where palisade's files appear inside the container.
pub const INIT_DIR: &str = "/.palisade";
/// palisade-init inside the container.
pub const INIT_PATH: &str = "/.palisade/palisade-init";
/// The plan inside the container.
pub const PLAN_PATH: &str = "/.palisade/plan.json";

/// The spec cannot take palisade-init.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("container {container}: {what} is missing or not of the expected type")]
    Shape {
        container: String,
        what: &'static str,
    },
    #[error("container {container}: process.args is empty: nothing to run")]
    NoArgs { container: String },
    #[error("container {container}: palisade-init {path}: not found on this node")]
    NoInit { container: String, path: String },
}

/// Adds the read-only bind mounts of `init_binary` and `plan_file`, and wraps `process.args`.
/// Running it twice changes nothing the second time.
pub fn install_init(
    container: &str,
    spec: &mut Value,
    init_binary: &Path,
    plan_file: &Path,
) -> Result<(), InstallError> {
    if !init_binary.is_file() {
        return Err(InstallError::NoInit {
            container: container.to_string(),
            path: init_binary.display().to_string(),
        });
    }
    let shape = |what| InstallError::Shape {
        container: container.to_string(),
        what,
    };
    let root = spec.as_object_mut().ok_or(shape("spec"))?;
    let mounts = root
        .entry("mounts")
        .or_insert_with(|| Value::Array(Vec::new()));
    let mounts = mounts.as_array_mut().ok_or(shape("mounts"))?;
    for (dest, source) in [(INIT_PATH, init_binary), (PLAN_PATH, plan_file)] {
        let present = mounts
            .iter()
            .any(|m| m.get("destination").and_then(Value::as_str) == Some(dest));
        if !present {
            mounts.push(json!({
                "destination": dest,
                "type": "bind",
                "source": source.display().to_string(),
                // nodev/nosuid cost nothing here; ro keeps the workload from replacing either file.
                "options": ["rbind", "ro", "nosuid", "nodev"],
            }));
        }
    }
    let process = root.get_mut("process").ok_or(shape("process"))?;
    wrap_process(container, process)
}

/// Wraps the argv of one OCI process (the init's, or an exec's process.json) with palisade-init.
pub fn wrap_process(container: &str, process: &mut Value) -> Result<(), InstallError> {
    let shape = |what| InstallError::Shape {
        container: container.to_string(),
        what,
    };
    let args = process
        .get_mut("args")
        .and_then(Value::as_array_mut)
        .ok_or(shape("process.args"))?;
    if args.is_empty() {
        return Err(InstallError::NoArgs {
            container: container.to_string(),
        });
    }
    if args.first().and_then(Value::as_str) == Some(INIT_PATH) {
        return Ok(());
    }
    let mut wrapped: Vec<Value> = [INIT_PATH, "--plan", PLAN_PATH, "--"]
        .iter()
        .map(|s| json!(s))
        .collect();
    wrapped.append(args);
    *args = wrapped;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        json!({
            "process": {"args": ["nginx", "-g", "daemon off;"], "cwd": "/"},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "root": {"path": "rootfs"}
        })
    }

    #[test]
    fn mounts_and_argv_are_added_once() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("palisade-init");
        std::fs::write(&init, b"\x7fELF").unwrap();
        let plan = dir.path().join("plan.json");
        let mut s = spec();
        install_init("c1", &mut s, &init, &plan).unwrap();
        install_init("c1", &mut s, &init, &plan).unwrap();
        assert_eq!(
            s["process"]["args"],
            json!([
                INIT_PATH,
                "--plan",
                PLAN_PATH,
                "--",
                "nginx",
                "-g",
                "daemon off;"
            ])
        );
        let mounts = s["mounts"].as_array().unwrap();
        assert_eq!(mounts.len(), 3, "{mounts:?}");
        assert_eq!(mounts[1]["destination"], INIT_PATH);
        assert_eq!(mounts[1]["source"], init.display().to_string());
        assert_eq!(mounts[2]["destination"], PLAN_PATH);
        assert!(mounts[2]["options"]
            .as_array()
            .unwrap()
            .contains(&json!("ro")));
        assert_eq!(s["root"]["path"], "rootfs", "other fields untouched");
    }

    #[test]
    fn exec_process_is_wrapped() {
        let mut p = json!({"args": ["sh", "-c", "id"], "env": ["A=1"]});
        wrap_process("c1", &mut p).unwrap();
        assert_eq!(
            p["args"],
            json!([INIT_PATH, "--plan", PLAN_PATH, "--", "sh", "-c", "id"])
        );
        assert_eq!(p["env"], json!(["A=1"]));
    }

    #[test]
    fn refuses_what_cannot_be_wrapped() {
        let mut p = json!({"args": []});
        assert_eq!(
            wrap_process("c1", &mut p).unwrap_err().to_string(),
            "container c1: process.args is empty: nothing to run"
        );
        let mut p = json!({"cwd": "/"});
        assert_eq!(
            wrap_process("c1", &mut p).unwrap_err().to_string(),
            "container c1: process.args is missing or not of the expected type"
        );
        let mut s = spec();
        let err = install_init(
            "c1",
            &mut s,
            Path::new("/nonexistent/palisade-init"),
            Path::new("/p"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "container c1: palisade-init /nonexistent/palisade-init: not found on this node"
        );
        assert_eq!(s, spec(), "a refused spec is left as it was");
    }
}
