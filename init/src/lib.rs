#![doc = include_str!("../README.md")]

pub mod args;
pub mod caps;
pub mod exec;
pub mod landlock;
pub mod nnp;
pub mod plan;
mod sys;

use std::convert::Infallible;
use std::ffi::OsString;
use thiserror::Error;

/// Exit codes, one per kind of failure, so the shim can tell them apart without
/// parsing stderr. 126 and 127 follow the shell's meaning.
pub mod exit {
    pub const USAGE: i32 = 120;
    pub const PLAN: i32 = 121;
    pub const LANDLOCK_ABI: i32 = 122;
    pub const LANDLOCK: i32 = 123;
    pub const CAPABILITIES: i32 = 124;
    pub const NO_NEW_PRIVS: i32 = 125;
    pub const NOT_EXECUTABLE: i32 = 126;
    pub const NOT_FOUND: i32 = 127;
}

/// Every way palisade-init can fail before the entrypoint runs.
#[derive(Debug, Error)]
pub enum InitError {
    #[error(transparent)]
    Args(#[from] args::ArgsError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    NoNewPrivs(#[from] nnp::NnpError),
    #[error(transparent)]
    Capabilities(#[from] caps::CapsError),
    #[error(transparent)]
    Landlock(#[from] landlock::LandlockError),
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
}

impl InitError {
    /// The process exit code for this failure, see [`exit`].
    pub fn exit_code(&self) -> i32 {
        match self {
            InitError::Args(_) => exit::USAGE,
            InitError::Plan(_) => exit::PLAN,
            InitError::NoNewPrivs(_) => exit::NO_NEW_PRIVS,
            InitError::Capabilities(_) => exit::CAPABILITIES,
            InitError::Landlock(e) if e.is_abi() => exit::LANDLOCK_ABI,
            InitError::Landlock(_) => exit::LANDLOCK,
            InitError::Exec(e) if e.is_not_found() => exit::NOT_FOUND,
            InitError::Exec(_) => exit::NOT_EXECUTABLE,
        }
    }
}

/// Applies a validated plan to the calling thread, in the order that keeps each step
/// possible: no_new_privs (landlock needs it without CAP_SYS_ADMIN), the capability
/// cut (still holding CAP_SETPCAP), then landlock last so that nothing above is
/// constrained by the ruleset.
pub fn apply(plan: &plan::Plan) -> Result<(), InitError> {
    // Everything that can fail without touching the process comes first, so a kernel
    // too old for the plan fails before anything irreversible has happened.
    let ruleset = match &plan.landlock {
        Some(ll) => Some(landlock::compile(ll, landlock::abi())?),
        None => None,
    };
    let keep = match &plan.capabilities {
        Some(caps) => Some(caps::mask_of(&caps.bounding_keep)?),
        None => None,
    };
    if plan.no_new_privs {
        nnp::set()?;
    }
    if let Some(keep) = keep {
        caps::restrict(keep)?;
    }
    if let Some(ruleset) = &ruleset {
        landlock::enforce(ruleset)?;
    }
    Ok(())
}

/// The whole helper: parse `args` (without the program name), load and apply the plan,
/// exec the entrypoint. Returns only on failure.
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> Result<Infallible, InitError> {
    let args = args::parse(args)?;
    let plan = plan::Plan::load(&args.plan)?;
    apply(&plan)?;
    Err(exec::exec(&args.argv).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn every_error_kind_has_its_exit_code() {
        let io = || io::Error::from_raw_os_error(libc::EPERM);
        let execve = |errno| {
            InitError::from(exec::ExecError::Execve {
                path: "/x".into(),
                source: io::Error::from_raw_os_error(errno),
            })
        };
        let cases: Vec<(InitError, i32)> = vec![
            (args::ArgsError::MissingPlan.into(), 120),
            (plan::PlanError::TooLarge { path: "/p".into() }.into(), 121),
            (
                landlock::LandlockError::AbiTooLow {
                    required: 99,
                    available: 7,
                }
                .into(),
                122,
            ),
            (
                landlock::LandlockError::FeatureMissing {
                    feature: "net".into(),
                    needed: 4,
                    available: 3,
                }
                .into(),
                122,
            ),
            (landlock::LandlockError::RestrictSelf(io()).into(), 123),
            (caps::CapsError::Get(io()).into(), 124),
            (nnp::NnpError::Set(io()).into(), 125),
            (exec::ExecError::NotExecutable("/x".into()).into(), 126),
            (execve(libc::EACCES), 126),
            (exec::ExecError::NotInPath("x".into()).into(), 127),
            (execve(libc::ENOENT), 127),
        ];
        for (err, code) in cases {
            assert_eq!(err.exit_code(), code, "{err}");
        }
    }
}
