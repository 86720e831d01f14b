//! The key-value store plugins use to keep state between calls.
//!
//! Scoped to one plugin name and one host, so two hosts (or two plugins)
//! never see each other's keys. Values and the total size per scope are
//! capped. The store lives in the operator's memory: it survives plugin
//! upgrades but not an operator restart, so plugins must treat it as a
//! cache (for example of a Redfish session URI).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Default cap of one value.
pub const DEFAULT_VALUE_CAP: usize = 1 << 20;

/// Default cap of all values of one scope.
pub const DEFAULT_SCOPE_CAP: usize = 16 << 20;

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvWriteError {
    /// The value exceeds the per-value cap.
    #[error("value of {size} bytes exceeds the cap of {cap} bytes")]
    ValueTooLarge {
        /// Size of the value.
        size: usize,
        /// The cap.
        cap: usize,
    },

    /// The scope would exceed its total cap.
    #[error("scope would hold {size} bytes, over the cap of {cap} bytes")]
    ScopeFull {
        /// Size the scope would have.
        size: usize,
        /// The cap.
        cap: usize,
    },
}

/// Identifies one scope: a plugin and a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KvScope {
    /// Plugin name.
    pub plugin: String,
    /// Host as `namespace/name`.
    pub host: String,
}

/// All scopes' values.
#[derive(Debug)]
pub struct KvStore {
    value_cap: usize,
    scope_cap: usize,
    scopes: Mutex<HashMap<KvScope, BTreeMap<String, Vec<u8>>>>,
}

impl Default for KvStore {
    fn default() -> Self {
        Self::new(DEFAULT_VALUE_CAP, DEFAULT_SCOPE_CAP)
    }
}

impl KvStore {
    /// A store with the given caps.
    pub fn new(value_cap: usize, scope_cap: usize) -> Self {
        Self {
            value_cap,
            scope_cap,
            scopes: Mutex::new(HashMap::new()),
        }
    }

    /// The per-value cap.
    pub fn value_cap(&self) -> usize {
        self.value_cap
    }

    /// Reads a value.
    pub fn get(&self, scope: &KvScope, key: &str) -> Option<Vec<u8>> {
        let scopes = self
            .scopes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        scopes
            .get(scope)
            .and_then(|values| values.get(key))
            .cloned()
    }

    /// Writes a value within the caps.
    pub fn set(&self, scope: &KvScope, key: &str, value: Vec<u8>) -> Result<(), KvWriteError> {
        if value.len() > self.value_cap {
            return Err(KvWriteError::ValueTooLarge {
                size: value.len(),
                cap: self.value_cap,
            });
        }

        let mut scopes = self
            .scopes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let values = scopes.entry(scope.clone()).or_default();
        let replaced = values.get(key).map_or(0, |old| old.len() + key.len());
        let used: usize = values
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum();
        let size = used - replaced + key.len() + value.len();

        if size > self.scope_cap {
            return Err(KvWriteError::ScopeFull {
                size,
                cap: self.scope_cap,
            });
        }

        values.insert(key.to_owned(), value);
        Ok(())
    }

    /// Removes a value.
    pub fn delete(&self, scope: &KvScope, key: &str) {
        let mut scopes = self
            .scopes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());

        if let Some(values) = scopes.get_mut(scope) {
            values.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(plugin: &str, host: &str) -> KvScope {
        KvScope {
            plugin: plugin.into(),
            host: host.into(),
        }
    }

    #[test]
    fn scopes_are_isolated() {
        let store = KvStore::default();
        store
            .set(&scope("redfish", "lab/a"), "session", b"/s/1".to_vec())
            .expect("fits");

        assert_eq!(
            store.get(&scope("redfish", "lab/a"), "session"),
            Some(b"/s/1".to_vec())
        );
        assert_eq!(store.get(&scope("redfish", "lab/b"), "session"), None);
        assert_eq!(store.get(&scope("other", "lab/a"), "session"), None);
    }

    #[test]
    fn caps_values_and_scopes() {
        let store = KvStore::new(8, 20);
        let scope = scope("p", "h");

        assert_eq!(
            store.set(&scope, "k", vec![0; 9]),
            Err(KvWriteError::ValueTooLarge { size: 9, cap: 8 })
        );
        store.set(&scope, "a", vec![0; 8]).expect("fits");
        store
            .set(&scope, "a", vec![0; 8])
            .expect("replacing does not double count");
        assert!(matches!(store.set(&scope, "b", vec![0; 8]), Ok(())));
        assert!(matches!(
            store.set(&scope, "c", vec![0; 8]),
            Err(KvWriteError::ScopeFull { .. })
        ));

        store.delete(&scope, "a");
        store
            .set(&scope, "c", vec![0; 8])
            .expect("room after delete");
    }
}
