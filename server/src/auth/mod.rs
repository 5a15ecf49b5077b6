//! Authentication: signing keys, JWTs, passwords, refresh tokens, the request extractor.

pub mod extract;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod throttle;
pub mod tokens;

pub use extract::AuthUser;
pub use jwt::{Jwt, TokenError, TypedClaims};
pub use keys::KeySet;
pub use password::Passwords;
pub use throttle::LoginThrottle;
