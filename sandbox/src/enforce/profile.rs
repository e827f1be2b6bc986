//! Edits of the spec's seccomp profile, on the raw JSON so that a profile the pod brought
//! (with actions palisade does not model) keeps everything it does not touch.

use serde_json::{json, Map, Value};

use super::Ctx;
use crate::seccomp::{Arch, EPERM};

/// A seccomp action with its errno (`SCMP_ACT_ERRNO` without one means EPERM, as in runc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Act {
    pub name: String,
    pub errno: Option<u64>,
}

impl Act {
    pub fn allow() -> Self {
        Self::named("SCMP_ACT_ALLOW")
    }

    pub fn log() -> Self {
        Self::named("SCMP_ACT_LOG")
    }

    pub fn eperm() -> Self {
        Self {
            name: "SCMP_ACT_ERRNO".to_owned(),
            errno: Some(u64::from(EPERM)),
        }
    }

    fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            errno: None,
        }
    }

    fn read(rule: &Map<String, Value>, action_key: &str, errno_key: &str) -> Self {
        let name = rule
            .get(action_key)
            .and_then(Value::as_str)
            .unwrap_or("SCMP_ACT_ALLOW")
            .to_owned();
        let errno = match name.as_str() {
            "SCMP_ACT_ERRNO" | "SCMP_ACT_TRACE" => Some(
                rule.get(errno_key)
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::from(EPERM)),
            ),
            _ => None,
        };
        Self { name, errno }
    }

    /// Whether the syscall goes through (logged or not).
    pub fn permits(&self) -> bool {
        matches!(self.name.as_str(), "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG")
    }
}

/// How the profile treats one syscall name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Treatment {
    /// Rules name it without conditions (the first one's action).
    Unconditional(Act),
    /// Some rule names it with argument conditions: its outcome depends on the arguments.
    Conditional,
    /// No rule names it: the default action applies.
    Default(Act),
}

/// The spec's `linux.seccomp`, created (allowing by default) on the first change when the
/// spec has none.
pub(super) struct Editor<'a> {
    linux: &'a mut Map<String, Value>,
    created: bool,
}

impl<'a> Editor<'a> {
    pub fn new(linux: &'a mut Map<String, Value>) -> Self {
        Self {
            linux,
            created: false,
        }
    }

    fn existing(&self) -> Option<&Map<String, Value>> {
        self.linux.get("seccomp").and_then(Value::as_object)
    }

    fn profile(&mut self) -> &mut Map<String, Value> {
        if self.existing().is_none() {
            let architectures: Vec<&str> = Arch::host()
                .map(|a| a.scmp_architectures().to_vec())
                .unwrap_or_default();
            self.linux.insert(
                "seccomp".to_owned(),
                json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": architectures, "syscalls": []}),
            );
            self.created = true;
        }
        match self.linux.get_mut("seccomp") {
            Some(Value::Object(p)) => p,
            _ => unreachable!("inserted above"),
        }
    }

    fn rules(&self) -> impl Iterator<Item = &Map<String, Value>> {
        self.existing()
            .and_then(|p| p.get("syscalls"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
    }

    /// What a syscall that no rule names gets.
    pub fn default_act(&self) -> Act {
        match self.existing() {
            Some(p) => Act::read(p, "defaultAction", "defaultErrnoRet"),
            None => Act::allow(),
        }
    }

    pub fn treatment(&self, name: &str) -> Treatment {
        let mut first = None;
        for rule in self.rules() {
            let names = rule.get("names").and_then(Value::as_array);
            if !names
                .into_iter()
                .flatten()
                .any(|n| n.as_str() == Some(name))
            {
                continue;
            }
            let conditional = rule
                .get("args")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if conditional {
                return Treatment::Conditional;
            }
            first.get_or_insert_with(|| Act::read(rule, "action", "errnoRet"));
        }
        match first {
            Some(act) => Treatment::Unconditional(act),
            None => Treatment::Default(self.default_act()),
        }
    }

    /// Takes `names` out of every rule (dropping rules left without names).
    pub fn remove(&mut self, names: &[&str]) {
        if self.existing().is_none() {
            return;
        }
        let Some(Value::Array(rules)) = self.profile().get_mut("syscalls") else {
            return;
        };
        for rule in rules.iter_mut() {
            if let Some(Value::Array(list)) = rule.get_mut("names") {
                list.retain(|n| !n.as_str().is_some_and(|n| names.contains(&n)));
            }
        }
        rules.retain(|r| {
            r.get("names")
                .and_then(Value::as_array)
                .is_none_or(|l| !l.is_empty())
        });
    }

    /// Adds a rule, unless its action is the default (runc's libseccomp refuses a rule
    /// that repeats the default action, and it would change nothing).
    pub fn push(&mut self, names: &[&str], act: &Act, args: Vec<Value>) {
        if names.is_empty() || *act == self.default_act() {
            return;
        }
        let mut rule = Map::new();
        rule.insert("names".to_owned(), json!(names));
        rule.insert("action".to_owned(), json!(act.name));
        if let Some(errno) = act.errno {
            rule.insert("errnoRet".to_owned(), json!(errno));
        }
        if !args.is_empty() {
            rule.insert("args".to_owned(), Value::Array(args));
        }
        let profile = self.profile();
        match profile.get_mut("syscalls") {
            Some(Value::Array(rules)) => rules.push(Value::Object(rule)),
            _ => {
                profile.insert("syscalls".to_owned(), json!([rule]));
            }
        }
    }

    /// Takes an architecture out of the filter; returns whether it was there.
    pub fn remove_architecture(&mut self, arch: &str) -> bool {
        if self.existing().is_none() {
            return false;
        }
        let Some(Value::Array(archs)) = self.profile().get_mut("architectures") else {
            return false;
        };
        let before = archs.len();
        archs.retain(|a| a.as_str() != Some(arch));
        archs.len() != before
    }

    /// Makes the profile's default deny with EPERM (for a syscall allow-list).
    pub fn deny_by_default(&mut self) {
        let profile = self.profile();
        profile.insert("defaultAction".to_owned(), json!("SCMP_ACT_ERRNO"));
        profile.insert("defaultErrnoRet".to_owned(), json!(EPERM));
    }

    /// Keeps, in rules that permit, only the names `keep` accepts.
    pub fn retain_permitted(&mut self, keep: impl Fn(&str) -> bool) {
        if self.existing().is_none() {
            return;
        }
        let Some(Value::Array(rules)) = self.profile().get_mut("syscalls") else {
            return;
        };
        for rule in rules.iter_mut() {
            let Some(obj) = rule.as_object_mut() else {
                continue;
            };
            if !Act::read(obj, "action", "errnoRet").permits() {
                continue;
            }
            if let Some(Value::Array(list)) = obj.get_mut("names") {
                list.retain(|n| n.as_str().is_some_and(&keep));
            }
        }
        rules.retain(|r| {
            r.get("names")
                .and_then(Value::as_array)
                .is_none_or(|l| !l.is_empty())
        });
    }

    /// Reports a profile created here.
    pub fn finish(self, ctx: &mut Ctx<'_>) {
        if self.created {
            ctx.out.applied.push(
                "seccomp: the spec had no profile (allow_unconfined_seccomp): created one that \
                 allows by default and carries the policy's rules"
                    .to_owned(),
            );
        }
    }
}
