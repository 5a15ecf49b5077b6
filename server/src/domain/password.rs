use super::{Email, Invalid};
use secrecy::{ExposeSecret, SecretString};

/// The password rule, stated once so that errors, the README and the OpenAPI text agree.
pub const PASSWORD_RULE: &str = "a password must be 10 to 128 characters long, must not be one of \
the most common passwords, and must not contain the local part of your email address";

/// Passwords that would satisfy the length rule yet are among the first tried by attackers.
const COMMON: &[&str] = &[
    "1234567890",
    "12345678910",
    "0123456789",
    "0987654321",
    "1111111111",
    "qwertyuiop",
    "1q2w3e4r5t",
    "1qaz2wsx3edc",
    "password12",
    "password123",
    "password1234",
    "passw0rd123",
    "iloveyou123",
    "qwerty12345",
    "qwerty123456",
    "abcdefghij",
    "abc1234567",
    "letmein123",
    "welcome123",
    "football123",
    "baseball123",
    "trustno1234",
    "sunshine123",
    "princess123",
    "dragon12345",
    "monkey12345",
    "changeme123",
    "therapy123",
    "therapist123",
    "aaaaaaaaaa",
];

/// A password as typed at sign-in. Only bounded, so that an attacker cannot make us hash
/// megabytes; whether it is right is for the hash to say.
pub struct Password(SecretString);

impl Password {
    /// Longer inputs are refused before hashing (Argon2 cost grows with input).
    pub const MAX_BYTES: usize = 1024;

    pub fn parse(raw: SecretString) -> Result<Self, Invalid> {
        if raw.expose_secret().is_empty() {
            return Err(Invalid::new("password must not be empty"));
        }
        if raw.expose_secret().len() > Self::MAX_BYTES {
            return Err(Invalid::new("password is too long"));
        }
        Ok(Self(raw))
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

/// A password chosen for an account, checked against [`PASSWORD_RULE`].
pub struct NewPassword(SecretString);

impl NewPassword {
    pub const MIN_CHARS: usize = 10;
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: SecretString, email: Option<&Email>) -> Result<Self, Invalid> {
        let p = raw.expose_secret();
        let n = p.chars().count();
        let weak = || Invalid::new(format!("weak password: {PASSWORD_RULE}"));
        if !(Self::MIN_CHARS..=Self::MAX_CHARS).contains(&n) {
            return Err(weak());
        }
        let lower = p.to_lowercase();
        if COMMON.contains(&lower.as_str()) || p.chars().all(|c| p.starts_with(c)) {
            return Err(weak());
        }
        if let Some(local) = email.map(Email::local_part)
            && local.chars().count() >= 3
            && lower.contains(local)
        {
            return Err(weak());
        }
        Ok(Self(raw))
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email::parse("ada.lovelace@example.com").unwrap()
    }

    #[test]
    fn rule_is_enforced() {
        let ok = |p: &str| NewPassword::parse(SecretString::from(p), Some(&email())).is_ok();
        assert!(ok("correct horse battery"));
        assert!(!ok("short"));
        assert!(!ok(&"x".repeat(129)));
        assert!(!ok("Password123"));
        assert!(!ok("zzzzzzzzzzzz"));
        assert!(!ok("my-ada.lovelace-secret"));
        assert!(ok(&"é".repeat(10)) || !ok("éééééééééé"));
    }
}
