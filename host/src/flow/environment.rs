//! Where binding reads variables from: the process, or a map (tests, the
//! demo's emulators). Only the variables a flow names are ever read.

use std::collections::BTreeMap;

/// Variables by name.
pub trait Environment: Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment, read one variable at a time.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}
