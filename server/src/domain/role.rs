use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Books appointments and attends sessions.
    Client,
    /// Publishes a profile and availability, admits clients, runs sessions.
    Therapist,
    /// Manages accounts and reads the audit trail.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Therapist => "therapist",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = super::Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(Role::Client),
            "therapist" => Ok(Role::Therapist),
            "admin" => Ok(Role::Admin),
            _ => Err(super::Invalid::new(
                "role must be one of client, therapist, admin",
            )),
        }
    }
}
