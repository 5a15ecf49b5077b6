//! Password hashing with Argon2id, off the async runtime.

use argon2::{
    Argon2,
    password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash},
};
use secrecy::{ExposeSecret as _, SecretString};

/// Hashes and verifies passwords.
///
/// Holds a hash of a random password, checked when an email is unknown, so that a sign-in
/// for an unknown account costs the same as one with a wrong password and its timing does
/// not tell which accounts exist.
#[derive(Clone)]
pub struct Passwords {
    dummy_hash: std::sync::Arc<str>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords")
    }
}

fn hash_blocking(password: &[u8]) -> anyhow::Result<String> {
    // argon2 0.6 defaults: Argon2id, m = 19 MiB, t = 2, p = 1 (OWASP's first choice).
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

fn verify_blocking(password: &[u8], hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

impl Passwords {
    pub async fn new() -> anyhow::Result<Self> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)?;
        let dummy = tokio::task::spawn_blocking(move || hash_blocking(&random)).await??;
        Ok(Self {
            dummy_hash: dummy.into(),
        })
    }

    /// Hash a new password.
    pub async fn hash(&self, password: &SecretString) -> anyhow::Result<String> {
        let p = password.clone();
        tokio::task::spawn_blocking(move || hash_blocking(p.expose_secret().as_bytes())).await?
    }

    /// Whether `password` matches `hash`; with no hash (unknown account) the work is done
    /// anyway against the dummy hash, and the answer is no.
    pub async fn verify(&self, password: &SecretString, hash: Option<&str>) -> bool {
        let p = password.clone();
        let (h, real) = match hash {
            Some(h) => (h.to_owned(), true),
            None => (self.dummy_hash.to_string(), false),
        };
        let ok =
            tokio::task::spawn_blocking(move || verify_blocking(p.expose_secret().as_bytes(), &h))
                .await
                .unwrap_or(false);
        ok && real
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let pw = Passwords::new().await.unwrap();
        let secret = SecretString::from("correct horse battery");
        let h = pw.hash(&secret).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(pw.verify(&secret, Some(&h)).await);
        assert!(
            !pw.verify(&SecretString::from("wrong horse battery"), Some(&h))
                .await
        );
        assert!(
            !pw.verify(&secret, None).await,
            "unknown account never verifies"
        );
    }
}
