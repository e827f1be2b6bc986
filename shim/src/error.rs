//! The shim's error type and its one mapping onto ttrpc status codes.

use containerd_shim::protos::ttrpc;
use containerd_shim::protos::ttrpc::{Code, Status};

use crate::config::ConfigError;
use crate::runc::RuncError;
use crate::service::table::{State, Transition};
use crate::stdio::StdioError;

/// Everything a task call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("container {0}: not found")]
    ContainerNotFound(String),
    #[error("container {container}: exec {exec}: not found")]
    ExecNotFound { container: String, exec: String },
    #[error("container {0}: already exists")]
    ContainerExists(String),
    #[error("container {container}: exec {exec}: already exists")]
    ExecExists { container: String, exec: String },
    #[error("{0}: process already finished")]
    ProcessFinished(String),
    /// The process's state does not allow the call (`container c1: not running`).
    #[error("{what}: {}", .asked.refusal())]
    InvalidState {
        what: String,
        from: State,
        asked: Transition,
    },
    /// Something the call needs is not there (`container c1: cgroups unknown`).
    #[error("{what}: {reason}")]
    Precondition { what: String, reason: String },
    #[error("{what}: {reason}")]
    InvalidArgument { what: String, reason: String },
    #[error("{0}: not supported by palisade")]
    Unsupported(&'static str),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runc(#[from] RuncError),
    #[error(transparent)]
    Stdio(#[from] StdioError),
    #[error("container {container}: idmapped rootfs: {source}")]
    Idmap {
        container: String,
        #[source]
        source: crate::idmap::IdmapError,
    },
    #[error("container {container}: mount rootfs: {source}")]
    Mount {
        container: String,
        #[source]
        source: containerd_shim::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Proto {
        context: String,
        #[source]
        source: containerd_shim::protos::protobuf::Error,
    },
    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Stats(#[from] crate::stats::StatsError),
    #[error(transparent)]
    Refused(#[from] palisade_sandbox::HardenError),
    #[error(transparent)]
    Gate(#[from] crate::gate::GateSetupError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Enforce(#[from] palisade_sandbox::EnforceError),
    #[error(transparent)]
    Install(#[from] palisade_sandbox::install::InstallError),
    #[error("container {container}: {reason}")]
    Unenforced { container: String, reason: String },
    #[error("container {container}: {reason}")]
    Compromised { container: String, reason: String },
    #[error(transparent)]
    CompromisePolicy(#[from] crate::compromise::CompromiseError),
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    #[error(transparent)]
    ProfileStage(#[from] crate::profile_stage::ProfileStageError),
    #[error(transparent)]
    ProfileExec(#[from] Box<crate::profile_exec::ProfileExecError>),
    #[error(transparent)]
    ProfileCreation(#[from] crate::profile_landlock::CreationError),
}

impl ShimError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShimError {
        let context = context.into();
        move |source| ShimError::Io { context, source }
    }

    /// The ttrpc status code containerd maps back onto errdefs.
    pub fn code(&self) -> Code {
        match self {
            ShimError::ContainerNotFound(_)
            | ShimError::ExecNotFound { .. }
            | ShimError::ProcessFinished(_) => Code::NOT_FOUND,
            ShimError::ContainerExists(_) | ShimError::ExecExists { .. } => Code::ALREADY_EXISTS,
            ShimError::InvalidState { .. } | ShimError::Precondition { .. } => {
                Code::FAILED_PRECONDITION
            }
            ShimError::InvalidArgument { .. }
            | ShimError::Config(_)
            | ShimError::Refused(_)
            | ShimError::Gate(_)
            | ShimError::Policy(_)
            | ShimError::Install(_) => Code::INVALID_ARGUMENT,
            ShimError::Enforce(_)
            | ShimError::Unenforced { .. }
            | ShimError::Compromised { .. } => Code::FAILED_PRECONDITION,
            ShimError::CompromisePolicy(_) => Code::INVALID_ARGUMENT,
            ShimError::Profile(
                crate::profile::ProfileError::Annotation { .. }
                | crate::profile::ProfileError::Workload { .. },
            ) => Code::INVALID_ARGUMENT,
            ShimError::Profile(_) | ShimError::ProfileStage(_) | ShimError::ProfileCreation(_) => {
                Code::FAILED_PRECONDITION
            }
            ShimError::ProfileExec(_) => Code::PERMISSION_DENIED,
            ShimError::Idmap {
                source: crate::idmap::IdmapError::Option { .. },
                ..
            } => Code::INVALID_ARGUMENT,
            ShimError::Idmap { .. } => Code::INTERNAL,
            ShimError::Unsupported(_) => Code::UNIMPLEMENTED,
            ShimError::Runc(RuncError::NotFound { .. }) => Code::NOT_FOUND,
            ShimError::Runc(_)
            | ShimError::Stdio(_)
            | ShimError::Mount { .. }
            | ShimError::Io { .. }
            | ShimError::Proto { .. }
            | ShimError::Json { .. }
            | ShimError::Stats(_) => Code::UNKNOWN,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        let mut status = Status::new();
        status.set_code(e.code());
        status.set_message(e.to_string());
        ttrpc::Error::RpcStatus(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(e: ShimError) -> Code {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => s.code(),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn not_found_arms() {
        assert_eq!(
            code_of(ShimError::ContainerNotFound("a".into())),
            Code::NOT_FOUND
        );
        assert_eq!(
            code_of(ShimError::ExecNotFound {
                container: "a".into(),
                exec: "e".into()
            }),
            Code::NOT_FOUND
        );
        assert_eq!(
            code_of(ShimError::ProcessFinished("a".into())),
            Code::NOT_FOUND
        );
        assert_eq!(
            code_of(ShimError::Runc(RuncError::NotFound { id: "a".into() })),
            Code::NOT_FOUND
        );
    }

    #[test]
    fn exists_arms() {
        assert_eq!(
            code_of(ShimError::ContainerExists("a".into())),
            Code::ALREADY_EXISTS
        );
        assert_eq!(
            code_of(ShimError::ExecExists {
                container: "a".into(),
                exec: "e".into()
            }),
            Code::ALREADY_EXISTS
        );
    }

    #[test]
    fn precondition_argument_and_unsupported_arms() {
        let state = ShimError::InvalidState {
            what: "container a".into(),
            from: State::Stopped,
            asked: Transition::Pause,
        };
        assert_eq!(state.to_string(), "container a: not running");
        assert_eq!(code_of(state), Code::FAILED_PRECONDITION);
        let missing = ShimError::Precondition {
            what: "container a".into(),
            reason: "cgroups unknown".into(),
        };
        assert_eq!(code_of(missing), Code::FAILED_PRECONDITION);
        let arg = ShimError::InvalidArgument {
            what: "exec spec".into(),
            reason: "empty".into(),
        };
        assert_eq!(code_of(arg), Code::INVALID_ARGUMENT);
        let e = ShimError::Unsupported("checkpoint");
        assert_eq!(e.to_string(), "checkpoint: not supported by palisade");
        assert_eq!(code_of(e), Code::UNIMPLEMENTED);
        let held = ShimError::Compromised {
            container: "c".into(),
            reason: "restart held back".into(),
        };
        assert_eq!(held.to_string(), "container c: restart held back");
        assert_eq!(code_of(held), Code::FAILED_PRECONDITION);
        let bad = ShimError::from(crate::compromise::CompromiseError::Annotation(
            "severity: 11 is not between 0 and 10".into(),
        ));
        assert_eq!(code_of(bad), Code::INVALID_ARGUMENT);
    }

    #[test]
    fn refused_container_is_an_invalid_argument() {
        let e = ShimError::Refused(palisade_sandbox::HardenError::Privileged {
            container: "c".into(),
        });
        assert!(
            e.to_string()
                .starts_with("container c: privileged containers are refused"),
            "{e}"
        );
        assert_eq!(code_of(e), Code::INVALID_ARGUMENT);
    }

    #[test]
    fn io_arm_keeps_message() {
        let e = ShimError::io("container a: open fifo")(std::io::Error::from_raw_os_error(
            libc::ENOENT,
        ));
        let msg = e.to_string();
        assert!(msg.starts_with("container a: open fifo: "), "{msg}");
        assert_eq!(code_of(e), Code::UNKNOWN);
    }
}
