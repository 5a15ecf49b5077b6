//! Appointment kinds and states.

use super::Invalid;
use serde::{Deserialize, Serialize};

/// What an appointment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentKind {
    /// The free initial consultation (at most one per client and therapist).
    Consultation,
    /// A therapy session.
    Session,
}

impl AppointmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consultation => "consultation",
            Self::Session => "session",
        }
    }

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "consultation" => Ok(Self::Consultation),
            "session" => Ok(Self::Session),
            _ => Err(Invalid::new("kind must be consultation or session")),
        }
    }
}

/// Where an appointment is in its life: `booked`, then one of the other three, for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    Booked,
    Cancelled,
    Completed,
    NoShow,
}

impl AppointmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Booked => "booked",
            Self::Cancelled => "cancelled",
            Self::Completed => "completed",
            Self::NoShow => "no_show",
        }
    }

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "booked" => Ok(Self::Booked),
            "cancelled" => Ok(Self::Cancelled),
            "completed" => Ok(Self::Completed),
            "no_show" => Ok(Self::NoShow),
            _ => Err(Invalid::new(
                "status must be booked, cancelled, completed or no_show",
            )),
        }
    }
}

/// `mon` … `sun`, as written in availability rules.
pub fn parse_weekday(s: &str) -> Result<jiff::civil::Weekday, Invalid> {
    use jiff::civil::Weekday::*;
    Ok(match s {
        "mon" => Monday,
        "tue" => Tuesday,
        "wed" => Wednesday,
        "thu" => Thursday,
        "fri" => Friday,
        "sat" => Saturday,
        "sun" => Sunday,
        _ => {
            return Err(Invalid::new(
                "weekday must be one of mon, tue, wed, thu, fri, sat, sun",
            ));
        }
    })
}

pub fn weekday_str(w: jiff::civil::Weekday) -> &'static str {
    use jiff::civil::Weekday::*;
    match w {
        Monday => "mon",
        Tuesday => "tue",
        Wednesday => "wed",
        Thursday => "thu",
        Friday => "fri",
        Saturday => "sat",
        Sunday => "sun",
    }
}

/// `HH:MM` to minutes after midnight; `24:00` is allowed as an end.
pub fn parse_clock(s: &str) -> Result<u16, Invalid> {
    let bad = || Invalid::new(format!("{s:?} is not a time of day like 09:00"));
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

pub fn clock_str(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_times() {
        assert_eq!(parse_clock("09:30").unwrap(), 570);
        assert_eq!(parse_clock("24:00").unwrap(), 1440);
        assert_eq!(clock_str(570), "09:30");
        for bad in ["9:30", "09:60", "25:00", "24:30", "noon", "09-30"] {
            assert!(parse_clock(bad).is_err(), "{bad}");
        }
    }
}
