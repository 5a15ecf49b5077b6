//! Signing keys for the JWTs this server issues, kept in `<data dir>/keys/`.
//!
//! Each key is an Ed25519 private key in a PKCS#8 PEM file named `<kid>.pem`, where the
//! `kid` is the key's RFC 7638 thumbprint. The file `current` names the key that signs;
//! every key in the folder verifies, so that tokens signed before a rotation stay valid
//! until they expire. `alcove keys rotate` adds a key and makes it current; deleting an
//! old file retires it. Several nodes behind one load balancer share this folder's files.

use anyhow::{Context as _, bail};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, spki::der::pem::LineEnding},
};
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest as _, Sha256};
use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

/// One key pair.
struct Key {
    /// The private key's seed, kept only to derive the deployment's shared secrets.
    seed: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The public key, base64url, as the JWK `x` member.
    x: String,
}

/// The signing key and every verification key, by `kid`.
pub struct KeySet {
    current: String,
    keys: BTreeMap<String, Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("current", &self.current)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key: members in lexicographic order, no spaces.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn key_from_signing(sk: &SigningKey) -> anyhow::Result<(String, Key)> {
    let x = URL_SAFE_NO_PAD.encode(sk.verifying_key().to_bytes());
    let der = sk.to_pkcs8_der().context("encoding the signing key")?;
    let key = Key {
        seed: sk.to_bytes(),
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        decoding: DecodingKey::from_ed_components(&x).context("building the verifying key")?,
        x: x.clone(),
    };
    Ok((thumbprint(&x), key))
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

fn create_dir_private(dir: &Path) -> anyhow::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b.create(dir)
        .with_context(|| format!("creating the key folder {}", dir.display()))
}

/// Generate a key, write it to `dir`, and return its kid (it is not made current).
fn generate(dir: &Path) -> anyhow::Result<String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context("reading the system random source")?;
    let sk = SigningKey::from_bytes(&seed);
    let (kid, _) = key_from_signing(&sk)?;
    let pem = sk
        .to_pkcs8_pem(LineEnding::LF)
        .context("encoding the signing key")?;
    write_private(&dir.join(format!("{kid}.pem")), pem.as_bytes())?;
    Ok(kid)
}

fn set_current(dir: &Path, kid: &str) -> anyhow::Result<()> {
    // Write then rename, so that a crash never leaves `current` empty.
    let tmp = dir.join("current.tmp");
    let _ = fs::remove_file(&tmp);
    write_private(&tmp, format!("{kid}\n").as_bytes())?;
    fs::rename(&tmp, dir.join("current")).context("updating keys/current")?;
    Ok(())
}

impl KeySet {
    /// Load the keys in `dir`, generating the first one when the folder has none.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        create_dir_private(dir)?;
        if !dir.join("current").exists() {
            let kid = generate(dir)?;
            set_current(dir, &kid)?;
            tracing::info!(kid, "generated a new token signing key");
        }
        Self::load(dir)
    }

    /// Load the keys in `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let current = fs::read_to_string(dir.join("current"))
            .with_context(|| format!("reading {}", dir.join("current").display()))?
            .trim()
            .to_owned();
        let mut keys = BTreeMap::new();
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path: PathBuf = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            let pem =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let sk = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
                anyhow::anyhow!("{}: not an Ed25519 PKCS#8 key: {e}", path.display())
            })?;
            let (kid, key) = key_from_signing(&sk)?;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if stem != kid {
                bail!(
                    "{}: the file name must be the key's thumbprint {kid}",
                    path.display()
                );
            }
            keys.insert(kid, key);
        }
        if !keys.contains_key(&current) {
            bail!(
                "{}: names key {current:?}, which is not in the folder",
                dir.join("current").display()
            );
        }
        Ok(Self { current, keys })
    }

    /// Keys given as configuration (`ALCOVE_SIGNING_KEYS`): one or more Ed25519 PKCS#8
    /// PEM blocks, the first of which signs. Several nodes of one deployment are given the
    /// same value, so that each verifies what the others sign.
    pub fn from_pems(text: &str) -> anyhow::Result<Self> {
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        const END: &str = "-----END PRIVATE KEY-----";
        let mut keys = BTreeMap::new();
        let mut current = None;
        let mut rest = text;
        while let Some(start) = rest.find(BEGIN) {
            let after = &rest[start..];
            let end = after
                .find(END)
                .context("ALCOVE_SIGNING_KEYS: a PEM block has no END line")?
                + END.len();
            let sk = SigningKey::from_pkcs8_pem(&after[..end]).map_err(|e| {
                anyhow::anyhow!("ALCOVE_SIGNING_KEYS: not an Ed25519 PKCS#8 key: {e}")
            })?;
            let (kid, key) = key_from_signing(&sk)?;
            current.get_or_insert_with(|| kid.clone());
            keys.insert(kid, key);
            rest = &after[end..];
        }
        let Some(current) = current else {
            bail!("ALCOVE_SIGNING_KEYS holds no PEM private key (-----BEGIN PRIVATE KEY-----)");
        };
        Ok(Self { current, keys })
    }

    /// A new key as PEM, for `ALCOVE_SIGNING_KEYS` (`alcove keys generate`).
    pub fn generate_pem() -> anyhow::Result<String> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).context("reading the system random source")?;
        let pem = SigningKey::from_bytes(&seed)
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the signing key")?;
        Ok(pem.to_string())
    }

    /// A 32-byte secret for `purpose`, derived from the signing key (the same on every node
    /// given the same keys): HMAC-SHA256(seed, purpose). Used for the keyed hashes of the
    /// shared counters; rotating the signing key starts those counters afresh.
    pub fn derived_secret(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, KeyInit as _, Mac as _};
        let key = &self.keys[&self.current];
        let mut mac = Hmac::<Sha256>::new_from_slice(&key.seed).expect("HMAC takes any key");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// [`Self::derived_secret`] for every key, the signing key's first: what one key seals,
    /// any node that has that key opens, while a rotation rolls out.
    pub fn derived_secrets(&self, purpose: &str) -> Vec<[u8; 32]> {
        use hmac::{Hmac, KeyInit as _, Mac as _};
        let mut kids: Vec<&String> = self.keys.keys().filter(|k| **k != self.current).collect();
        kids.insert(0, &self.current);
        kids.into_iter()
            .map(|kid| {
                let mut mac = Hmac::<Sha256>::new_from_slice(&self.keys[kid].seed)
                    .expect("HMAC takes any key");
                mac.update(purpose.as_bytes());
                mac.finalize().into_bytes().into()
            })
            .collect()
    }

    /// Add a key and make it the signing key; returns its kid.
    pub fn rotate(dir: &Path) -> anyhow::Result<String> {
        create_dir_private(dir)?;
        let kid = generate(dir)?;
        set_current(dir, &kid)?;
        Ok(kid)
    }

    pub fn current_kid(&self) -> &str {
        &self.current
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub(crate) fn signing_key(&self) -> &EncodingKey {
        &self.keys[&self.current].encoding
    }

    pub(crate) fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid).map(|k| &k.decoding)
    }

    /// The public keys as a JWK Set (RFC 7517), for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|(kid, k)| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "x": k.x,
                    "kid": kid, "alg": "EdDSA", "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_generates_then_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = KeySet::load_or_create(dir.path()).unwrap();
        let b = KeySet::load_or_create(dir.path()).unwrap();
        assert_eq!(a.current_kid(), b.current_kid());
        assert_eq!(a.kids().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let pem = dir.path().join(format!("{}.pem", a.current_kid()));
            let mode = fs::metadata(pem).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o077,
                0,
                "private key must not be readable by others"
            );
        }
    }

    #[test]
    fn keys_given_as_configuration_are_the_same_on_every_node() {
        let (a, b) = (
            KeySet::generate_pem().unwrap(),
            KeySet::generate_pem().unwrap(),
        );
        let both = format!("{a}\n{b}");
        let one = KeySet::from_pems(&both).unwrap();
        let two = KeySet::from_pems(&both).unwrap();
        assert_eq!(one.current_kid(), two.current_kid());
        assert_eq!(one.kids().count(), 2);
        assert_eq!(
            KeySet::from_pems(&a).unwrap().current_kid(),
            one.current_kid()
        );
        assert_eq!(one.derived_secret("x"), two.derived_secret("x"));
        assert_ne!(one.derived_secret("x"), one.derived_secret("y"));
        assert!(KeySet::from_pems("nothing here").is_err());
        assert!(format!("{one:?}").find("PRIVATE").is_none());
    }

    #[test]
    fn rotation_keeps_old_keys_for_verification() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeySet::load_or_create(dir.path()).unwrap();
        let kid = KeySet::rotate(dir.path()).unwrap();
        let after = KeySet::load(dir.path()).unwrap();
        assert_eq!(after.current_kid(), kid);
        assert!(after.decoding_key(first.current_kid()).is_some());
        assert_eq!(after.jwks()["keys"].as_array().unwrap().len(), 2);
    }
}
