use super::Invalid;

/// A person's name as shown to others: 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(Invalid::new("display_name must not be empty"));
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(Invalid::new(format!(
                "display_name must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        if s.chars().any(char::is_control) {
            return Err(Invalid::new(
                "display_name must not contain control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Free text with a length limit, such as a biography. Line breaks and tabs are kept;
/// other control characters are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedText(String);

impl BoundedText {
    pub fn parse(field: &str, raw: &str, max_chars: usize) -> Result<Self, Invalid> {
        let s = raw.trim();
        if s.chars().count() > max_chars {
            return Err(Invalid::new(format!(
                "{field} must be at most {max_chars} characters"
            )));
        }
        if s.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            return Err(Invalid::new(format!(
                "{field} must not contain control characters"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_rules() {
        assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"x".repeat(101)).is_err());
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
        assert!(DisplayName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn bounded_text_keeps_newlines() {
        assert!(BoundedText::parse("bio", "line one\nline two", 100).is_ok());
        assert!(BoundedText::parse("bio", "bell\u{7}", 100).is_err());
        assert!(BoundedText::parse("bio", &"x".repeat(101), 100).is_err());
    }
}
