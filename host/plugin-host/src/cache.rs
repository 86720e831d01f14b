//! Compiled components cached on disk, keyed by the wasm digest and the
//! engine's compatibility hash.
//!
//! Compiling a component takes tens of milliseconds to seconds; loading the
//! cached native code takes well under one. An entry is only loaded after
//! its own digest, recorded beside it when it was written, checks out.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Why compiling or caching failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The bytes are not a valid component for this engine.
    #[error("the plugin is not a valid WebAssembly component")]
    Compile(#[source] wasmtime::Error),

    /// The cache directory could not be written.
    #[error("could not write the compile cache at {path}")]
    WriteCache {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the disk cache.
    Hit,
    /// Compiled (and written to the cache when one is configured).
    Compiled,
}

/// The on-disk cache; without a directory every load compiles.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl CompileCache {
    /// A cache in `dir`, or none.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// The component for `wasm` (whose digest is `digest`), from the cache
    /// when possible.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
    ) -> Result<(Component, CacheOutcome), CompileError> {
        let Some(dir) = &self.dir else {
            let component = Component::from_binary(engine, wasm).map_err(CompileError::Compile)?;
            return Ok((component, CacheOutcome::Compiled));
        };

        let path = dir.join(format!(
            "{digest}-{:016x}.cwasm",
            compatibility_hash(engine)
        ));

        if let Some(component) = read_verified(engine, &path) {
            return Ok((component, CacheOutcome::Hit));
        }

        let compiled = engine
            .precompile_component(wasm)
            .map_err(CompileError::Compile)?;
        // The cache only saves time: a plugin whose native code cannot be stored still loads.
        if let Err(error) = write_entry(&path, &compiled) {
            tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), "plugin compiled but not cached");
        }
        let component = deserialize_trusted(engine, &compiled).map_err(CompileError::Compile)?;

        Ok((component, CacheOutcome::Compiled))
    }
}

/// A stable hash of the engine settings that native code depends on.
fn compatibility_hash(engine: &Engine) -> u64 {
    struct Sha(Sha256);

    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            let digest = self.0.clone().finalize();
            u64::from_le_bytes(std::array::from_fn(|index| digest[index]))
        }

        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }

    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

fn sidecar(path: &Path) -> PathBuf {
    path.with_extension("cwasm.sha256")
}

/// Reads an entry whose digest matches its sidecar; anything else is a miss.
fn read_verified(engine: &Engine, path: &Path) -> Option<Component> {
    let bytes = std::fs::read(path).ok()?;
    let recorded = std::fs::read_to_string(sidecar(path)).ok()?;

    if recorded.trim() != sha256_hex(&bytes) {
        tracing::warn!(path = %path.display(), "compile cache entry does not match its digest; recompiling");
        return None;
    }

    match deserialize_trusted(engine, &bytes) {
        Ok(component) => Some(component),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "compile cache entry is unusable; recompiling");
            None
        }
    }
}

fn write_entry(path: &Path, compiled: &[u8]) -> Result<(), CompileError> {
    // Several processes (or registries) may compile the same plugin at once: each writes its
    // own temporary file, and the rename makes whichever finishes last the entry.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let write = |target: &Path, contents: &[u8]| {
        let unique = WRITES.fetch_add(1, Ordering::Relaxed);
        let temporary = target.with_extension(format!("partial-{}-{unique}", std::process::id()));
        std::fs::write(&temporary, contents)
            .and_then(|()| std::fs::rename(&temporary, target))
            .map_err(|source| CompileError::WriteCache {
                path: target.to_owned(),
                source,
            })
    };

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| CompileError::WriteCache {
            path: dir.to_owned(),
            source,
        })?;
    }

    write(path, compiled)?;
    write(&sidecar(path), sha256_hex(compiled).as_bytes())
}

/// Loads native code produced by this host's engine.
#[allow(
    unsafe_code,
    reason = "loading precompiled native code is inherently unsafe in wasmtime"
)]
fn deserialize_trusted(engine: &Engine, compiled: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `compiled` was produced by `Engine::precompile_component` of an
    // engine with the same compatibility hash: either just now, or read from
    // our cache directory after its SHA-256 matched the digest we recorded
    // when writing it. wasmtime also checks the header and engine settings.
    unsafe { Component::deserialize(engine, compiled) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: the header alone.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn a_cache_that_cannot_be_written_does_not_stop_a_load() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let blocked = dir.path().join("not-a-directory");
        std::fs::write(&blocked, b"a file where the cache directory should be")
            .unwrap_or_else(|e| panic!("{e}"));
        let cache = CompileCache::new(Some(blocked.join("cache")));

        let loaded = cache.load(&Engine::default(), EMPTY_COMPONENT, "digest");

        assert!(matches!(loaded, Ok((_, CacheOutcome::Compiled))));
    }

    #[test]
    fn concurrent_writers_of_one_entry_all_succeed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("entry.cwasm");

        let results: Vec<_> = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| write_entry(&path, b"native code")))
                .collect();
            writers.into_iter().map(|writer| writer.join()).collect()
        });

        assert!(results.iter().all(|result| matches!(result, Ok(Ok(())))));
        assert_eq!(
            std::fs::read(&path).ok().as_deref(),
            Some(&b"native code"[..])
        );
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
