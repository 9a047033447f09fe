//! The on-disk cache of compiled components, keyed by module digest and engine fingerprint.
//!
//! Compiling a component takes hundreds of milliseconds; loading a cached artifact takes about
//! one. An entry is a postcard header (format, digest, engine fingerprint, artifact checksum)
//! followed by the serialized artifact. The checksum is verified before the artifact is handed
//! to `Component::deserialize`, which trusts its input: a torn or tampered file is recompiled,
//! never loaded.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::artifact::ArtifactKey;

/// The sha256 digest of a module's bytes: its identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Bumped whenever the entry layout changes.
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct EntryHeader {
    format: u32,
    digest: [u8; 32],
    engine: u64,
    artifact_sha256: [u8; 32],
    artifact_len: u64,
}

/// Compiles components, through the disk cache when it has a directory.
#[derive(Debug)]
pub struct CompileCache {
    dir: Option<PathBuf>,
    engine_fingerprint: u64,
    compiles: AtomicU64,
}

impl CompileCache {
    /// A cache in `dir` (created if missing); `None` compiles every time.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_fingerprint: hasher.finish(),
            compiles: AtomicU64::new(0),
        }
    }

    /// How many components this cache compiled (rather than loaded from disk).
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// The engine fingerprint artifacts are keyed by.
    pub fn engine_fingerprint(&self) -> u64 {
        self.engine_fingerprint
    }

    /// The component for `bytes`: loaded from the disk cache, else from `shared` (an artifact
    /// another node sealed, opened with the key), else compiled; then cached on disk.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: Digest,
        bytes: &[u8],
        shared: Option<(&ArtifactKey, &[u8])>,
    ) -> wasmtime::Result<Component> {
        let path = self.entry_path(digest);
        if let Some(path) = &path
            && let Some(component) = self.load(engine, digest, path)
        {
            metrics::counter!(crate::metrics::COMPILE_CACHE_HITS, "source" => "disk").increment(1);
            return Ok(component);
        }
        let opened =
            shared.and_then(|(key, sealed)| key.open(digest, self.engine_fingerprint, sealed));
        let component = match opened.and_then(|artifact| deserialize_sealed(engine, artifact)) {
            Some(component) => {
                metrics::counter!(crate::metrics::COMPILE_CACHE_HITS, "source" => "artifact")
                    .increment(1);
                component
            }
            None => {
                self.compiles.fetch_add(1, Ordering::Relaxed);
                Component::new(engine, bytes)?
            }
        };
        if let Some(path) = &path
            && let Err(e) = self.store(&component, digest, path)
        {
            // The cache is an optimisation: a read-only or full disk costs time, not correctness.
            tracing::warn!(path = %path.display(), "cannot write the compile cache: {e:#}");
        }
        Ok(component)
    }

    fn entry_path(&self, digest: Digest) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{digest}-{:016x}.cwasm", self.engine_fingerprint)))
    }

    fn load(&self, engine: &Engine, digest: Digest, path: &Path) -> Option<Component> {
        let file = std::fs::read(path).ok()?;
        let artifact = self.verified_artifact(&file, digest)?;
        // SAFETY: `deserialize` requires bytes produced by `Component::serialize` of a
        // compatible engine. The header binds them to this digest and engine fingerprint, and the
        // checksum proves they are the bytes this cache wrote.
        #[allow(unsafe_code, reason = "loading our own checksummed compiled artifact")]
        let component = unsafe { Component::deserialize(engine, artifact) };
        match component {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "recompiling a cached artifact that does not load: {e:#}");
                None
            }
        }
    }

    fn verified_artifact<'a>(&self, file: &'a [u8], digest: Digest) -> Option<&'a [u8]> {
        let header_len = u32::from_le_bytes(file.get(..4)?.try_into().ok()?) as usize;
        let header: EntryHeader = postcard::from_bytes(file.get(4..4 + header_len)?).ok()?;
        let artifact = file.get(4 + header_len..)?;
        let valid = header.format == FORMAT
            && header.digest == digest.0
            && header.engine == self.engine_fingerprint
            && header.artifact_len == artifact.len() as u64
            && header.artifact_sha256 == <[u8; 32]>::from(Sha256::digest(artifact));
        valid.then_some(artifact)
    }

    fn store(&self, component: &Component, digest: Digest, path: &Path) -> anyhow::Result<()> {
        let artifact = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        let header = postcard::to_allocvec(&EntryHeader {
            format: FORMAT,
            digest: digest.0,
            engine: self.engine_fingerprint,
            artifact_sha256: Sha256::digest(&artifact).into(),
            artifact_len: artifact.len() as u64,
        })?;
        let mut entry = Vec::with_capacity(4 + header.len() + artifact.len());
        entry.extend_from_slice(&u32::try_from(header.len())?.to_le_bytes());
        entry.extend_from_slice(&header);
        entry.extend_from_slice(&artifact);
        let dir = path
            .parent()
            .ok_or_else(|| anyhow::anyhow!("cache path has no parent"))?;
        std::fs::create_dir_all(dir)?;
        // Write then rename, so a reader never sees half an entry.
        let mut temporary = tempfile_in(dir)?;
        std::io::Write::write_all(&mut temporary.1, &entry)?;
        temporary.1.sync_all()?;
        std::fs::rename(&temporary.0, path)?;
        Ok(())
    }
}

/// Deserializes an artifact whose seal was verified.
fn deserialize_sealed(engine: &Engine, artifact: &[u8]) -> Option<Component> {
    // SAFETY: `deserialize` requires bytes produced by `Component::serialize` of a compatible
    // engine. The seal's HMAC proves a holder of the nodes' key made them for this module and
    // this engine fingerprint (see `artifact`), and nodes only seal what they serialized.
    #[allow(
        unsafe_code,
        reason = "loading an artifact a node sealed with the fleet's key"
    )]
    let component = unsafe { Component::deserialize(engine, artifact) };
    component
        .inspect_err(|e| tracing::warn!("compiling a shared artifact that does not load: {e:#}"))
        .ok()
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(unique);
    let file = std::fs::File::create(&path)?;
    Ok((path, file))
}
