//! Response bodies shared by several endpoints.

use crate::{domain::Role, store::User};
use serde::Serialize;
use uuid::Uuid;

/// An account as its owner and admins see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            role: u.role(),
            email: u.email,
            display_name: u.display_name,
        }
    }
}

/// An account in the admin list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminUserView {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub disabled: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
}

impl From<User> for AdminUserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            role: u.role(),
            email: u.email,
            display_name: u.display_name,
            disabled: u.disabled,
            created_at: u.created_at.get(),
        }
    }
}
