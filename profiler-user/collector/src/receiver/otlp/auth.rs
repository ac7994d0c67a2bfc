//! Bearer-token authentication of incoming requests (`auth.bearer_token_file`), the same check
//! for gRPC (`UNAUTHENTICATED`) and HTTP (401).
//!
//! The token is read once when the config is checked, so a missing file fails the start and
//! not the first request. Tokens are compared as SHA-256 digests in constant time: neither the
//! position of the first wrong byte nor the token's length leaks through response timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::AuthConfig;
use crate::config::ConfigError;

/// The expected token, kept only as its digest.
pub struct BearerToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    /// Reads the token of `auth` (at config path `path`, e.g. `receivers.otlp.protocols.grpc.auth`).
    pub fn load(auth: &AuthConfig, path: &str) -> Result<Self, ConfigError> {
        if let Some(name) = &auth.authenticator {
            return Err(ConfigError::new(
                format!("{path}.authenticator"),
                format!(
                    "authenticator extensions (`{name}`) are not supported yet; \
                     set `bearer_token_file` here instead"
                ),
            ));
        }
        let Some(file) = &auth.bearer_token_file else {
            return Err(ConfigError::new(path, "set `bearer_token_file` (the only authentication supported)"));
        };
        let at = format!("{path}.bearer_token_file");
        let text = std::fs::read_to_string(file)
            .map_err(|e| ConfigError::new(&at, format!("cannot read `{}`: {e}", file.display())))?;
        // Files usually end in a newline that is not part of the token.
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError::new(at, format!("`{}` holds no token", file.display())));
        }
        Ok(Self::new(token))
    }

    pub fn new(token: &str) -> Self {
        Self { digest: Sha256::digest(token.as_bytes()).into() }
    }

    /// Whether an `Authorization` header value carries the token (`Bearer <token>`, the scheme
    /// case-insensitive as HTTP requires).
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else { return false };
        let Some((scheme, token)) = split_scheme(value) else { return false };
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return false;
        }
        let got: [u8; 32] = Sha256::digest(token).into();
        got.ct_eq(&self.digest).into()
    }
}

/// `Bearer abc` → (`Bearer`, `abc`), extra spaces between allowed.
fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some((scheme, token))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn accepts_only_the_token_with_the_bearer_scheme() {
        let t = BearerToken::new("s3cret");
        assert!(t.accepts(Some(b"Bearer s3cret")));
        assert!(t.accepts(Some(b"bearer  s3cret")));
        for bad in [&b"Bearer s3cre"[..], b"Bearer s3cret2", b"Basic s3cret", b"s3cret", b"Bearer ", b""] {
            assert!(!t.accepts(Some(bad)), "{}", String::from_utf8_lossy(bad));
        }
        assert!(!t.accepts(None));
    }

    #[test]
    fn loads_the_token_file_and_names_the_key_on_errors() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "tok").unwrap();
        let auth = AuthConfig { bearer_token_file: Some(f.path().into()), authenticator: None };
        assert!(BearerToken::load(&auth, "a").unwrap().accepts(Some(b"Bearer tok")));
        let missing = AuthConfig { bearer_token_file: Some("/nonexistent/token".into()), authenticator: None };
        assert_eq!(BearerToken::load(&missing, "a").unwrap_err().path, "a.bearer_token_file");
        let ext = AuthConfig { bearer_token_file: None, authenticator: Some("bearertokenauth".into()) };
        assert_eq!(BearerToken::load(&ext, "a").unwrap_err().path, "a.authenticator");
        assert_eq!(BearerToken::load(&AuthConfig::default(), "a").unwrap_err().path, "a");
    }
}
