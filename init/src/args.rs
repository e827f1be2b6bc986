//! The command line: `palisade-init --plan <file> -- <entrypoint> [args...]`.

use std::ffi::OsString;
use std::path::PathBuf;
use thiserror::Error;

/// Shown with every usage error.
pub const USAGE: &str = "palisade-init --plan <file> -- <entrypoint> [args...]";

/// What the shim passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub plan: PathBuf,
    /// The entrypoint's argv, byte for byte.
    pub argv: Vec<OsString>,
}

/// A command line that does not match [`USAGE`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("usage: missing --plan ({USAGE})")]
    MissingPlan,
    #[error("usage: --plan needs a file ({USAGE})")]
    MissingPlanValue,
    #[error("usage: --plan given twice ({USAGE})")]
    DuplicatePlan,
    #[error("usage: unexpected argument {0:?} ({USAGE})")]
    Unexpected(String),
    #[error("usage: missing -- before the entrypoint ({USAGE})")]
    MissingSeparator,
    #[error("usage: no entrypoint after -- ({USAGE})")]
    MissingEntrypoint,
}

/// Parses the arguments after the program name. Everything after `--` is the
/// entrypoint's, so options of the helper never clash with the workload's.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Args, ArgsError> {
    let mut args = args.into_iter();
    let mut plan = None;
    loop {
        let Some(arg) = args.next() else {
            return Err(if plan.is_none() {
                ArgsError::MissingPlan
            } else {
                ArgsError::MissingSeparator
            });
        };
        if arg == "--" {
            break;
        }
        let value = if arg == "--plan" {
            args.next().ok_or(ArgsError::MissingPlanValue)?
        } else if let Some(v) = arg.to_str().and_then(|s| s.strip_prefix("--plan=")) {
            OsString::from(v)
        } else {
            return Err(ArgsError::Unexpected(arg.to_string_lossy().into_owned()));
        };
        if value.is_empty() {
            return Err(ArgsError::MissingPlanValue);
        }
        if plan.replace(PathBuf::from(value)).is_some() {
            return Err(ArgsError::DuplicatePlan);
        }
    }
    let plan = plan.ok_or(ArgsError::MissingPlan)?;
    let argv: Vec<OsString> = args.collect();
    if argv.is_empty() {
        return Err(ArgsError::MissingEntrypoint);
    }
    Ok(Args { plan, argv })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Args, ArgsError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn plan_and_argv_are_split_at_the_separator() {
        let got = parse_strs(&[
            "--plan", "/p.json", "--", "/bin/sh", "-c", "a b", "--", "--plan",
        ])
        .unwrap();
        assert_eq!(got.plan, PathBuf::from("/p.json"));
        assert_eq!(got.argv, vec!["/bin/sh", "-c", "a b", "--", "--plan"]);
        let got = parse_strs(&["--plan=/q.json", "--", "true"]).unwrap();
        assert_eq!(got.plan, PathBuf::from("/q.json"));
        assert_eq!(got.argv, vec!["true"]);
    }

    #[test]
    fn argv_bytes_that_are_not_utf8_survive() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'a', 0xff, b'b']);
        let got = parse(vec!["--plan".into(), "/p".into(), "--".into(), odd.clone()]).unwrap();
        assert_eq!(got.argv, vec![odd]);
    }

    #[test]
    fn malformed_command_lines_are_rejected() {
        assert_eq!(parse_strs(&[]), Err(ArgsError::MissingPlan));
        assert_eq!(parse_strs(&["--", "sh"]), Err(ArgsError::MissingPlan));
        assert_eq!(parse_strs(&["--plan"]), Err(ArgsError::MissingPlanValue));
        assert_eq!(
            parse_strs(&["--plan=", "--", "sh"]),
            Err(ArgsError::MissingPlanValue)
        );
        assert_eq!(
            parse_strs(&["--plan", "/p"]),
            Err(ArgsError::MissingSeparator)
        );
        assert_eq!(
            parse_strs(&["--plan", "/p", "--"]),
            Err(ArgsError::MissingEntrypoint)
        );
        assert_eq!(
            parse_strs(&["--plan", "/p", "--plan", "/q", "--", "sh"]),
            Err(ArgsError::DuplicatePlan)
        );
        assert_eq!(
            parse_strs(&["--plan", "/p", "sh"]),
            Err(ArgsError::Unexpected("sh".into()))
        );
    }
}
