//! The child environment: explicit, never inherited wholesale.
//!
//! A slotbox process often holds secrets in its environment (model API keys, cloud tokens, the
//! server's own bearer token). Commands written by a model must not see them, so a child's
//! environment is built from fixed defaults, the names the operator allow-lists from the parent,
//! and explicit values, in that order of increasing precedence. Building it is a pure function of
//! its inputs (the parent's environment is passed in), so it is tested without touching the
//! process environment.

use std::collections::BTreeMap;

/// The PATH a child gets when none is set explicitly: the usual system directories.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Parent variables passed through by default: locale and time zone only, never credentials.
pub const DEFAULT_ALLOW: &[&str] = &["LANG", "LC_ALL", "LC_CTYPE", "TZ"];

/// Which variables a command's environment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvPolicy {
    /// Names copied from the parent's environment when present there.
    pub allow: Vec<String>,
    /// Explicit values; they win over defaults and allow-listed values.
    pub set: BTreeMap<String, String>,
}

impl Default for EnvPolicy {
    fn default() -> Self {
        Self {
            allow: DEFAULT_ALLOW
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
            set: BTreeMap::new(),
        }
    }
}

impl EnvPolicy {
    /// Also pass the parent's `name` through.
    pub fn allow(mut self, name: impl Into<String>) -> Self {
        self.allow.push(name.into());
        self
    }

    /// Set `name` to `value` explicitly.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set.insert(name.into(), value.into());
        self
    }

    /// The environment of a command, given the parent's variables and the backend's defaults
    /// (`HOME` and the like, which depend on where the command runs).
    pub fn resolve<'a>(
        &self,
        parent: impl IntoIterator<Item = (&'a str, &'a str)>,
        backend_defaults: &[(&str, &str)],
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("PATH".to_owned(), DEFAULT_PATH.to_owned());
        // Pagers would wait for a keypress that never comes.
        env.insert("PAGER".to_owned(), "cat".to_owned());
        env.insert("GIT_PAGER".to_owned(), "cat".to_owned());
        // A UTF-8 locale that exists everywhere, so tools do not fall back to ASCII.
        env.insert("LANG".to_owned(), "C.UTF-8".to_owned());
        for (name, value) in backend_defaults {
            env.insert((*name).to_owned(), (*value).to_owned());
        }
        for (name, value) in parent {
            if self.allow.iter().any(|allowed| allowed == name) {
                env.insert(name.to_owned(), value.to_owned());
            }
        }
        for (name, value) in &self.set {
            env.insert(name.clone(), value.clone());
        }
        env
    }
}

/// The parent's environment as UTF-8 pairs (non-UTF-8 entries cannot be allow-listed by name and
/// are skipped).
pub(crate) fn parent_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn secrets_in_the_parent_are_not_inherited() {
        let parent = [
            ("OPENAI_API_KEY", "sk-secret"),
            ("LANG", "en_US.UTF-8"),
            ("PATH", "/opt/evil:/usr/bin"),
            ("HOME", "/root"),
        ];
        let env = EnvPolicy::default().resolve(parent, &[("HOME", "/workspace")]);
        let expected: BTreeMap<String, String> = [
            ("GIT_PAGER", "cat"),
            ("HOME", "/workspace"),
            ("LANG", "en_US.UTF-8"),
            ("PAGER", "cat"),
            ("PATH", DEFAULT_PATH),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn allow_list_and_explicit_values_take_precedence() {
        let parent = [("GH_TOKEN", "ghp_x"), ("TZ", "UTC")];
        let env = EnvPolicy::default()
            .allow("GH_TOKEN")
            .set("TZ", "Europe/Paris")
            .resolve(parent, &[]);
        assert_eq!(env.get("GH_TOKEN").map(String::as_str), Some("ghp_x"));
        assert_eq!(env.get("TZ").map(String::as_str), Some("Europe/Paris"));
    }
}
