//! Who may read and write which caches. A token is either one listed in the
//! config, with the caches it may read and write (`"*"`: all), or an
//! HS256-signed JWT whose claims carry the same `read` and `write` lists and
//! an `exp`. With neither configured the node is open: every client may do
//! everything, which the start-up log says.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use thiserror::Error;

/// A request its token does not allow, or a token that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// One configured token and its grants.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
    /// The HMAC secret JWTs are signed with (HS256); none: JWTs are refused.
    pub jwt_secret: Option<String>,
}

/// What a token may do; also the claims of a JWT (besides `exp`).
#[derive(Debug, PartialEq, Eq, Deserialize)]
struct Grants {
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
}

fn granted(list: &[String], cache: &str) -> bool {
    list.iter().any(|c| c == "*" || c == cache)
}

/// What one client may do.
#[derive(Clone, Debug)]
pub enum Access {
    /// No authentication configured: everything.
    Open,
    /// Authentication configured, no token presented yet: nothing.
    Anonymous,
    Granted(Arc<TokenGrants>),
}

/// The grants of a presented token.
#[derive(Debug)]
pub struct TokenGrants(Grants);

impl Access {
    pub fn check_read(&self, cache: &str) -> Result<(), AuthError> {
        self.check(cache, "read", |g| granted(&g.read, cache))
    }

    pub fn check_write(&self, cache: &str) -> Result<(), AuthError> {
        self.check(cache, "write", |g| granted(&g.write, cache))
    }

    fn check(&self, cache: &str, what: &str, allowed: impl Fn(&Grants) -> bool) -> Result<(), AuthError> {
        match self {
            Access::Open => Ok(()),
            Access::Granted(grants) if allowed(&grants.0) => Ok(()),
            Access::Granted(_) => Err(AuthError(format!("this token may not {what} cache {cache}"))),
            Access::Anonymous => Err(AuthError(format!("a token is needed to {what} cache {cache}"))),
        }
    }
}

/// Turns presented tokens into [`Access`].
pub struct Authenticator {
    tokens: HashMap<String, Arc<TokenGrants>>,
    jwt: Option<(DecodingKey, Validation)>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        let tokens = config
            .tokens
            .iter()
            .map(|t| {
                let grants = Grants {
                    read: t.read.clone(),
                    write: t.write.clone(),
                };
                (t.token.clone(), Arc::new(TokenGrants(grants)))
            })
            .collect();
        let jwt = config.jwt_secret.as_ref().map(|secret| {
            // `exp` is required and checked; the algorithm is pinned.
            (
                DecodingKey::from_secret(secret.as_bytes()),
                Validation::new(Algorithm::HS256),
            )
        });
        Authenticator { tokens, jwt }
    }

    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some()
    }

    /// The access `token` gives; an unknown token is an error.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Access, AuthError> {
        if !self.is_enabled() {
            return Ok(Access::Open);
        }
        match token {
            None => Ok(Access::Anonymous),
            Some(token) => {
                if let Some(grants) = self.tokens.get(token) {
                    return Ok(Access::Granted(grants.clone()));
                }
                let Some((key, validation)) = &self.jwt else {
                    return Err(AuthError("unknown token".into()));
                };
                jsonwebtoken::decode::<Grants>(token, key, validation)
                    .map(|data| Access::Granted(Arc::new(TokenGrants(data.claims))))
                    .map_err(|e| AuthError(format!("token refused: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        Authenticator::new(&AuthConfig {
            tokens: vec![
                TokenConfig {
                    token: "writer".into(),
                    read: vec!["*".into()],
                    write: vec!["scores".into()],
                },
                TokenConfig {
                    token: "reader".into(),
                    read: vec!["scores".into()],
                    write: vec![],
                },
            ],
            jwt_secret: Some("jwt-secret".into()),
        })
    }

    fn jwt(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn signed_jwts_grant_their_claims_until_they_expire() {
        let auth = authenticator();
        let exp = crate::grid::now_ms() / 1000 + 600;
        let token = jwt(
            "jwt-secret",
            serde_json::json!({"read":["scores"],"write":["scores"],"exp":exp}),
        );
        let access = auth.authenticate(Some(&token)).unwrap();
        assert!(access.check_write("scores").is_ok());
        assert!(access.check_read("other").is_err());

        let forged = jwt("other-secret", serde_json::json!({"read":["*"],"exp":exp}));
        assert!(auth.authenticate(Some(&forged)).is_err(), "a wrong signature");
        let expired = jwt("jwt-secret", serde_json::json!({"read":["*"],"exp":1_000_000}));
        assert!(auth.authenticate(Some(&expired)).is_err(), "an expired token");
        let no_exp = jwt("jwt-secret", serde_json::json!({"read":["*"]}));
        assert!(auth.authenticate(Some(&no_exp)).is_err(), "exp is required");
    }

    #[test]
    fn tokens_grant_what_they_list() {
        let auth = authenticator();
        let writer = auth.authenticate(Some("writer")).unwrap();
        assert!(writer.check_read("anything").is_ok());
        assert!(writer.check_write("scores").is_ok());
        assert!(writer.check_write("other").is_err());
        let reader = auth.authenticate(Some("reader")).unwrap();
        assert!(reader.check_read("scores").is_ok());
        assert!(reader.check_read("other").is_err());
        assert!(reader.check_write("scores").is_err());
    }

    #[test]
    fn no_token_or_a_wrong_one_gets_nothing() {
        let auth = authenticator();
        assert!(auth.authenticate(Some("guess")).is_err());
        let anonymous = auth.authenticate(None).unwrap();
        assert!(anonymous.check_read("scores").is_err());
    }

    #[test]
    fn without_tokens_everything_is_open() {
        let auth = Authenticator::new(&AuthConfig::default());
        assert!(auth.jwt.is_none());
        assert!(!auth.is_enabled());
        assert!(auth
            .authenticate(Some("anything"))
            .unwrap()
            .check_write("x")
            .is_ok());
    }
}
