//! The on-disk cache of precompiled components.
//!
//! Loading a precompiled (`.cwasm`) artifact maps machine code into the process, so a file the
//! host did not write itself must never be loaded. Each entry is keyed by the SHA-256 of the
//! wasm and the engine's compatibility hash, and sealed with an HMAC under a secret key that
//! lives in the cache directory (mode 0600, created on first use). An entry that is missing,
//! foreign, truncated, corrupt or rejected by wasmtime is recompiled and replaced by an atomic
//! rename; the cache never makes a load fail.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"KILNCW01";
const MAC_LEN: usize = 32;

/// How a component was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a valid cache entry.
    Hit,
    /// No entry: compiled and stored.
    Compiled,
    /// An entry existed but was not trusted or not loadable: compiled again and replaced.
    Recompiled { reason: String },
}

pub(crate) struct ComponentCache {
    dir: PathBuf,
    key: [u8; 32],
    compat: String,
}

impl ComponentCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create cache dir {}: {e}", dir.display()))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        let key = load_or_create_key(&dir.join("cache.key"))?;
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = hex::encode(&hasher.0.finalize()[..8]);
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
            compat,
        })
    }

    pub(crate) fn entry_path(&self, wasm: &[u8]) -> PathBuf {
        let digest = hex::encode(Sha256::digest(wasm));
        self.dir.join(format!("{digest}-{}.cwasm", self.compat))
    }

    /// The component for `wasm`, from the cache when a sealed entry exists.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(wasm);
        let wasm_digest = Sha256::digest(wasm);
        let reason = match fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("unreadable: {e}")),
            Ok(bytes) => match self.open_entry(&wasm_digest, &bytes) {
                Err(why) => Some(why),
                // SAFETY: the bytes carry our HMAC, so this host produced them with
                // `precompile_component` for an engine with the same compatibility hash.
                Ok(payload) => match unsafe { Component::deserialize(engine, payload) } {
                    Ok(c) => return Ok((c, CacheOutcome::Hit)),
                    Err(e) => Some(format!("rejected by wasmtime: {e}")),
                },
            },
        };
        let payload = engine
            .precompile_component(wasm)
            .map_err(|e| anyhow::anyhow!("compiling the component failed: {e:#}"))?;
        // SAFETY: produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &payload) }
            .map_err(|e| anyhow::anyhow!("loading the compiled component failed: {e:#}"))?;
        if let Err(e) = self.store_entry(&path, &wasm_digest, &payload) {
            tracing::warn!(path = %path.display(), "could not write component cache entry: {e}");
        }
        let outcome = match reason {
            None => CacheOutcome::Compiled,
            Some(reason) => {
                tracing::warn!(path = %path.display(), "component cache entry not used ({reason}); recompiled");
                CacheOutcome::Recompiled { reason }
            }
        };
        Ok((component, outcome))
    }

    fn mac(&self, wasm_digest: &[u8], payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(wasm_digest);
        mac.update(self.compat.as_bytes());
        mac.update(payload);
        mac
    }

    fn open_entry<'a>(&self, wasm_digest: &[u8], bytes: &'a [u8]) -> Result<&'a [u8], String> {
        if bytes.len() < MAGIC.len() + MAC_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not a Kiln cache entry (bad header)".into());
        }
        let (tag, payload) = bytes[MAGIC.len()..].split_at(MAC_LEN);
        self.mac(wasm_digest, payload)
            .verify_slice(tag)
            .map_err(|_| {
                "seal does not verify (corrupt or not written by this host)".to_string()
            })?;
        Ok(payload)
    }

    fn store_entry(&self, path: &Path, wasm_digest: &[u8], payload: &[u8]) -> std::io::Result<()> {
        let tag = self.mac(wasm_digest, payload).finalize().into_bytes();
        let tmp = path.with_extension(format!(
            "tmp.{}.{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&tag)?;
            f.write_all(payload)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// The cache's secret: created once with O_EXCL and mode 0600, so concurrent first starts agree.
fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    for _ in 0..2 {
        match fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => return Ok(bytes.try_into().unwrap()),
            Ok(_) => {
                // A short key is a crash during creation or tampering: replace it; entries sealed
                // with the old key simply recompile.
                let _ = fs::remove_file(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot read cache key {}: {e}", path.display()),
        }
        let key: [u8; 32] = rand::random();
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
        // hard_link fails if another process won the race; then read theirs.
        let won = fs::hard_link(&tmp, path).is_ok();
        let _ = fs::remove_file(&tmp);
        if won {
            return Ok(key);
        }
    }
    anyhow::bail!("cannot create cache key {}", path.display())
}

/// Feeds `Hash` output into SHA-256 so the compatibility hash is stable across processes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the digest is used")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
