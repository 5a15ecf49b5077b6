use super::Invalid;
use std::fmt;

/// An email address, trimmed and lower-cased, so that uniqueness is case-insensitive.
///
/// Lower-casing the local part is technically lossy (RFC 5321 lets it be case-sensitive),
/// but no mail provider in use treats it so, and one account per mailbox is what users expect.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Longest address SMTP can carry (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim().to_lowercase();
        if s.is_empty() {
            return Err(Invalid::new("email must not be empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(Invalid::new(format!(
                "email must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        let valid = email_address::EmailAddress::parse_with_options(
            &s,
            email_address::Options::default()
                .without_display_text()
                .without_domain_literal(),
        )
        .is_ok();
        // A deliverable address has a dot in its domain (no `user@localhost`).
        let domain_has_dot = s
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.contains('.') && !d.starts_with('.') && !d.ends_with('.'));
        if !valid || !domain_has_dot {
            return Err(Invalid::new("email is not a valid address"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@`, used by the password rule.
    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }
}

impl fmt::Debug for Email {
    // Addresses are personal data: keep them out of debug output and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_whitespace() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn refuses_bad_addresses() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@localhost",
            "a b@example.com",
            "Ada <ada@example.com>",
            "ada@[127.0.0.1]",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }
}
