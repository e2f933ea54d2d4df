//! Who is calling: bearer tokens from `[[api.tokens]]` (and `api.token_file`), each bound to a
//! project and a role. Tokens are kept only as SHA-256 digests, and a request's token is
//! hashed and compared with every configured digest in constant time (no early exit, no map
//! lookup whose timing depends on the bytes), so neither the file nor the comparison's timing
//! gives a secret away.

use std::collections::HashSet;
use std::path::Path;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::AppState;
use super::rate_limit::RateLimiter;
use crate::config::{ApiConfig, Role, TokenConfig};
use crate::service::{ApiError, Caller};

/// The callers an API process knows.
#[derive(Debug, Default)]
pub struct Auth {
    /// Every configured token's digest and caller, scanned whole on each request.
    callers: Vec<([u8; 32], Caller)>,
    limiter: Option<RateLimiter>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

impl Auth {
    /// The tokens of `[api]`; with none the API is open (every caller is the admin of project
    /// `default`), which is refused unless it listens on a loopback address.
    pub fn from_config(api: &ApiConfig) -> Result<Self, AuthError> {
        let mut tokens = api.tokens.clone();
        if let Some(file) = &api.token_file {
            tokens.extend(read_token_file(file)?);
        }
        if tokens.is_empty() && !api.listen.ip().is_loopback() {
            return Err(AuthError(format!(
                "api.listen {} is not a loopback address and no [[api.tokens]] (or \
                 api.token_file) are configured: an open API there would let anyone who can \
                 reach it act as admin",
                api.listen
            )));
        }
        let mut callers = Vec::new();
        let mut seen = HashSet::new();
        for t in &tokens {
            let digest = digest_of(t);
            let name = t
                .name
                .clone()
                .unwrap_or_else(|| format!("{}/{}", t.project, role_name(t.role)));
            let caller = Caller {
                name,
                project: t.project.clone(),
                role: t.role,
            };
            if !seen.insert(digest) {
                return Err(AuthError(format!(
                    "the same token is configured twice (project {})",
                    t.project
                )));
            }
            callers.push((digest, caller));
        }
        Ok(Self {
            callers,
            limiter: RateLimiter::new(api.rate_limit_per_second, api.rate_limit_burst),
        })
    }

    /// Whether any token is configured (else the API is open).
    pub fn is_open(&self) -> bool {
        self.callers.is_empty()
    }

    /// The caller a presented token stands for.
    pub fn caller(&self, token: Option<&str>) -> Result<Caller, ApiError> {
        self.identify(token).map(|(caller, _)| caller)
    }

    /// [`Auth::caller`], then one request from that caller's rate (`[api]
    /// rate_limit_per_second`).
    pub fn admit(&self, token: Option<&str>) -> Result<Caller, ApiError> {
        let (caller, digest) = self.identify(token)?;
        if let Some(limiter) = &self.limiter {
            limiter.admit(&digest)?;
        }
        Ok(caller)
    }

    /// The caller and its token's digest (the open API's one caller: zeros).
    fn identify(&self, token: Option<&str>) -> Result<(Caller, [u8; 32]), ApiError> {
        if self.is_open() {
            let caller = Caller {
                name: "api".into(),
                project: "default".into(),
                role: Role::Admin,
            };
            return Ok((caller, [0; 32]));
        }
        let Some(token) = token else {
            return Err(ApiError::new(
                "unauthorized",
                "a bearer token is required (Authorization: Bearer TOKEN)",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match find_constant_time(&self.callers, &digest) {
            Some(i) => Ok((self.callers[i].1.clone(), digest)),
            None => Err(ApiError::new("unauthorized", "the token is not valid")),
        }
    }
}

/// The index of the entry whose digest equals `digest`: every entry and every byte is compared
/// whatever matches, and the index is selected without a branch on secret data.
fn find_constant_time(callers: &[([u8; 32], Caller)], digest: &[u8; 32]) -> Option<usize> {
    let mut found = subtle::Choice::from(0);
    let mut index = 0u64;
    for (i, (d, _)) in callers.iter().enumerate() {
        let hit = d.ct_eq(digest);
        index.conditional_assign(&(i as u64), hit);
        found |= hit;
    }
    bool::from(found).then_some(index as usize)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

fn digest_of(t: &TokenConfig) -> [u8; 32] {
    match (&t.token, &t.token_sha256) {
        (Some(token), _) => Sha256::digest(token.as_bytes()).into(),
        (None, Some(hex_digest)) => {
            let mut out = [0u8; 32];
            // Checked to be 64 hex digits when the config was read.
            hex::decode_to_slice(hex_digest, &mut out).expect("a checked SHA-256");
            out
        }
        (None, None) => unreachable!("checked when the config was read"),
    }
}

/// A token file: `[[tokens]]` tables with the keys of `[[api.tokens]]`.
fn read_token_file(path: &Path) -> Result<Vec<TokenConfig>, AuthError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        tokens: Vec<TokenConfig>,
    }
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuthError(format!("api.token_file {shown}: cannot read: {e}")))?;
    let file: File = toml::from_str(&text)
        .map_err(|e| AuthError(format!("{shown}: {}", e.to_string().trim_end())))?;
    for (i, t) in file.tokens.iter().enumerate() {
        t.check(&format!("tokens[{i}]"))
            .map_err(|e| AuthError(format!("{shown}: {e}")))?;
    }
    Ok(file.tokens)
}

/// The bearer token of a request: the `Authorization` header, or the `access_token` query
/// parameter (for EventSource, which cannot send headers).
fn presented(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.admit(presented(parts).as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(tokens: Vec<TokenConfig>, listen: &str) -> ApiConfig {
        ApiConfig {
            tokens,
            listen: listen.parse().unwrap(),
            ..ApiConfig::default()
        }
    }

    fn token(secret: &str, project: &str, role: Role) -> TokenConfig {
        TokenConfig {
            token: Some(secret.into()),
            project: project.into(),
            role,
            ..TokenConfig::default()
        }
    }

    #[test]
    fn tokens_map_to_their_project_and_role() {
        let hashed = TokenConfig {
            token_sha256: Some(hex::encode(Sha256::digest(b"ops-secret-0123456789"))),
            project: "ops".into(),
            role: Role::Admin,
            ..TokenConfig::default()
        };
        let auth = Auth::from_config(&api(
            vec![
                token("demo-secret-0123456789", "demo", Role::Member),
                hashed,
            ],
            "0.0.0.0:8004",
        ))
        .unwrap();
        let demo = auth.caller(Some("demo-secret-0123456789")).unwrap();
        assert_eq!((demo.project.as_str(), demo.role), ("demo", Role::Member));
        assert!(
            auth.caller(Some("ops-secret-0123456789"))
                .unwrap()
                .is_admin()
        );
        assert_eq!(auth.caller(Some("wrong")).unwrap_err().status(), 401);
        assert_eq!(auth.caller(None).unwrap_err().status(), 401);
    }

    #[test]
    fn the_constant_time_scan_finds_every_position_and_nothing_else() {
        let caller = |name: &str| Caller {
            name: name.into(),
            project: "p".into(),
            role: Role::Member,
        };
        let digest = |s: &str| -> [u8; 32] { Sha256::digest(s.as_bytes()).into() };
        let callers: Vec<_> = ["a", "b", "c"].map(|s| (digest(s), caller(s))).into();
        for (i, s) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(find_constant_time(&callers, &digest(s)), Some(i));
        }
        assert_eq!(find_constant_time(&callers, &digest("d")), None);
        // One byte off in the last position is still a miss.
        let mut near = digest("c");
        near[31] ^= 1;
        assert_eq!(find_constant_time(&callers, &near), None);
        assert_eq!(find_constant_time(&[], &digest("a")), None);
    }

    #[test]
    fn an_open_api_is_only_allowed_on_loopback() {
        let open = Auth::from_config(&api(vec![], "127.0.0.1:0")).unwrap();
        assert!(open.caller(None).unwrap().is_admin());
        let err = Auth::from_config(&api(vec![], "0.0.0.0:8004")).unwrap_err();
        assert!(err.0.contains("not a loopback address"), "{err}");
    }

    #[test]
    fn a_token_file_adds_tokens_and_names_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            "[[tokens]]\ntoken = \"file-secret-0123456789\"\nproject = \"p1\"\n",
        )
        .unwrap();
        let mut config = api(vec![], "0.0.0.0:1");
        config.token_file = Some(path.clone());
        let auth = Auth::from_config(&config).unwrap();
        assert_eq!(
            auth.caller(Some("file-secret-0123456789")).unwrap().project,
            "p1"
        );
        std::fs::write(&path, "[[tokens]]\ntoken = \"short\"\nproject = \"p1\"\n").unwrap();
        let err = Auth::from_config(&config).unwrap_err().0;
        assert!(
            err.contains("tokens.toml") && err.contains("16 characters"),
            "{err}"
        );
    }
}
