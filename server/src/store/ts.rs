//! [`Ts`]: an instant as both backends store it.

use jiff::Timestamp;
use sqlx::{
    Decode, Encode, Postgres, Sqlite, Type,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef},
    sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef},
};
use std::fmt;

/// An instant with microsecond precision.
///
/// PostgreSQL stores it as `TIMESTAMPTZ`. SQLite stores it as fixed-width UTC text
/// (`2026-11-29T09:00:00.000000Z`), so that comparing the text compares the times: the
/// overlap triggers and every range query rely on that. (A variable-width format, like the
/// one jiff prints by default, would sort `09:00:00.5Z` before `09:00:00Z`.)
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub Timestamp);

impl Ts {
    /// The current time, truncated to the microseconds both backends keep, so that a value
    /// read back equals the value written.
    pub fn now() -> Self {
        Self::from(Timestamp::now())
    }

    pub fn get(self) -> Timestamp {
        self.0
    }

    fn fixed_width(self) -> String {
        let dt = self.0.to_zoned(jiff::tz::TimeZone::UTC).datetime();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.subsec_nanosecond() / 1_000
        )
    }
}

impl From<Timestamp> for Ts {
    fn from(t: Timestamp) -> Self {
        let micros = t.as_microsecond();
        Ts(Timestamp::from_microsecond(micros).expect("truncation stays in range"))
    }
}

impl From<Ts> for Timestamp {
    fn from(t: Ts) -> Self {
        t.0
    }
}

impl fmt::Debug for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <str as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <str as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Ts {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.fixed_width(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Ts(text.parse::<Timestamp>()?))
    }
}

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <jiff_sqlx::Timestamp as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <jiff_sqlx::Timestamp as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode(jiff_sqlx::Timestamp::from(self.0), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let t = <jiff_sqlx::Timestamp as Decode<Postgres>>::decode(value)?;
        Ok(Ts(t.to_jiff()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_text_sorts_like_time() {
        let a = Ts::from("2026-11-29T09:00:00Z".parse::<Timestamp>().unwrap());
        let b = Ts::from("2026-11-29T09:00:00.5Z".parse::<Timestamp>().unwrap());
        assert_eq!(a.fixed_width(), "2026-11-29T09:00:00.000000Z");
        assert!(a.fixed_width() < b.fixed_width());
        assert_eq!(
            b.fixed_width().parse::<Timestamp>().unwrap(),
            b.get(),
            "round trip"
        );
    }

    #[test]
    fn now_is_truncated_to_microseconds() {
        assert_eq!(Ts::now().get().subsec_nanosecond() % 1_000, 0);
    }
}
