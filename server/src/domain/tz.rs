use super::Invalid;
use jiff::tz::TimeZone;

/// An IANA time zone name (`Europe/London`) known to the time zone database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeZoneName {
    name: String,
    tz: TimeZone,
}

impl TimeZoneName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = raw.trim();
        // Fixed offsets and POSIX strings would silently ignore daylight saving.
        if name.is_empty() || name.len() > 64 || name.starts_with(['+', '-']) {
            return Err(Invalid::new(format!("unknown time zone {name:?}")));
        }
        let tz =
            TimeZone::get(name).map_err(|_| Invalid::new(format!("unknown time zone {name:?}")))?;
        let canonical = tz.iana_name().unwrap_or(name).to_owned();
        Ok(Self {
            name: canonical,
            tz,
        })
    }

    pub fn utc() -> Self {
        Self {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_zones() {
        assert_eq!(
            TimeZoneName::parse("Europe/London").unwrap().as_str(),
            "Europe/London"
        );
        assert!(TimeZoneName::parse("America/New_York").is_ok());
        assert!(TimeZoneName::parse("Mars/Olympus_Mons").is_err());
        assert!(TimeZoneName::parse("+02:00").is_err());
        assert!(TimeZoneName::parse("").is_err());
    }
}
