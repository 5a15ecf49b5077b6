//! Domain values that can only be built through a `parse` that checks them.
//!
//! Handlers turn request bodies into these once, at the edge; everything past the
//! edge can rely on them being valid.

mod appointment;
mod email;
mod name;
mod password;
mod profile;
mod role;
pub mod schedule;
mod tz;

pub use appointment::{
    AppointmentKind, AppointmentStatus, clock_str, parse_clock, parse_weekday, weekday_str,
};
pub use email::Email;
pub use name::{BoundedText, DisplayName};
pub use password::{NewPassword, PASSWORD_RULE, Password};
pub use profile::{Language, Modality, Specialisation};
pub use role::Role;
pub use tz::TimeZoneName;

/// Why a value was refused: a message fit to show to the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}
