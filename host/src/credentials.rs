//! Host-held plugin credentials: the host reads a secret (from the config, a file or a
//! provider command), adds it as a header to every request a plugin sends to its allowed
//! origins, and reads it again when the cloud answers `unauthorized`. The plugin never sees the
//! secret, so a compromised or buggy plugin cannot leak it anywhere the allow-list does not
//! already reach.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[plugins.NAME.credentials]`: exactly one of `token`, `token_file`, `token_command`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// The request header that carries the secret.
    #[serde(default = "default_header")]
    pub header: String,
    /// Put before the secret in the header's value.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// A fixed secret (cannot be refreshed: an `unauthorized` goes straight to the policy).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the secret (surrounding whitespace is ignored); read at start and again
    /// after `unauthorized`, so a rotation written there is picked up without a restart.
    /// Relative to the config file.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A credentials provider: a program and its arguments whose standard output is the
    /// secret, run at start and after `unauthorized` (like AWS's `credential_process`).
    #[serde(default)]
    pub token_command: Option<Vec<String>>,
    /// How long the provider command may run.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_ms: u64,
}

fn default_header() -> String {
    "Authorization".into()
}

fn default_prefix() -> String {
    "Bearer ".into()
}

fn default_command_timeout() -> u64 {
    10_000
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Fixed(String),
    File(PathBuf),
    Command(Vec<String>),
}

/// A plugin's credentials, shared by all its calls.
#[derive(Debug)]
pub struct Credentials {
    header: reqwest::header::HeaderName,
    prefix: String,
    source: Source,
    command_timeout: Duration,
    current: RwLock<String>,
    /// Grows with every change of the secret, so that a caller can tell whether the secret
    /// changed since its call began (then it calls again without reading the source).
    generation: AtomicU64,
    refreshes: AtomicU64,
}

/// What a refresh found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// A new secret is in use: retrying may help.
    Changed,
    /// The source gave the same secret (or cannot change): retrying would not help.
    Unchanged,
}

impl CredentialsConfig {
    /// Checks the keys; `at` is the config path (`plugins.NAME.credentials`) for messages.
    pub fn check(&self, at: &str) -> Result<(), String> {
        let set = [
            self.token.is_some(),
            self.token_file.is_some(),
            self.token_command.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return Err(format!(
                "{at}: give exactly one of `token`, `token_file`, `token_command` ({set} given)"
            ));
        }
        if self.token_command.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!(
                "{at}.token_command: a program and its arguments, e.g. [\"/usr/local/bin/get-token\", \"--profile\", \"prod\"]"
            ));
        }
        reqwest::header::HeaderName::from_bytes(self.header.as_bytes())
            .map_err(|e| format!("{at}.header: {:?} is not a header name: {e}", self.header))?;
        Ok(())
    }
}

impl Credentials {
    /// Reads the secret for the first time; an error names the config key and the cause.
    pub async fn load(config: &CredentialsConfig, at: &str) -> Result<Self, String> {
        config.check(at)?;
        let source = match (&config.token, &config.token_file, &config.token_command) {
            (Some(t), _, _) => Source::Fixed(t.clone()),
            (_, Some(f), _) => Source::File(f.clone()),
            (_, _, Some(c)) => Source::Command(c.clone()),
            _ => unreachable!("checked: exactly one source"),
        };
        let mut creds = Self {
            header: reqwest::header::HeaderName::from_bytes(config.header.as_bytes())
                .expect("checked"),
            prefix: config.prefix.clone(),
            source,
            command_timeout: Duration::from_millis(config.command_timeout_ms),
            current: RwLock::new(String::new()),
            generation: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
        };
        let secret = creds.read().await.map_err(|e| format!("{at}: {e}"))?;
        creds.current = RwLock::new(secret);
        Ok(creds)
    }

    /// The header to add to a request.
    pub fn header(&self) -> (reqwest::header::HeaderName, reqwest::header::HeaderValue) {
        let value = format!("{}{}", self.prefix, self.current.read().unwrap());
        let mut value = reqwest::header::HeaderValue::from_str(&value)
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
        value.set_sensitive(true);
        (self.header.clone(), value)
    }

    /// Reads the secret again after `unauthorized`, for a call that began while `used` (see
    /// `generation`) was in use. If another call changed the secret since, that is the change
    /// this call needs (its request may have carried the old one).
    pub async fn refresh(&self, used: u64) -> Result<Refresh, String> {
        if matches!(self.source, Source::Fixed(_)) {
            return Ok(Refresh::Unchanged);
        }
        let secret = self.read().await?;
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let mut current = self.current.write().unwrap();
        // Checked under the lock that guards changes, so no change slips between the two.
        if self.generation.load(Ordering::Acquire) != used {
            return Ok(Refresh::Changed);
        }
        if *current == secret {
            return Ok(Refresh::Unchanged);
        }
        *current = secret;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(Refresh::Changed)
    }

    /// Which secret is in use (see `generation`).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// How many times the secret was read again.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Where the secret comes from, for messages (never the secret itself).
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Fixed(_) => "a fixed token in the config".into(),
            Source::File(p) => format!("token file {}", p.display()),
            Source::Command(c) => format!("command {}", c[0]),
        }
    }

    async fn read(&self) -> Result<String, String> {
        let secret = match &self.source {
            Source::Fixed(t) => t.clone(),
            Source::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?,
            Source::Command(argv) => self.run(argv).await?,
        };
        let secret = secret.trim().to_string();
        if secret.is_empty() {
            return Err(format!("{} gave an empty secret", self.describe()));
        }
        if reqwest::header::HeaderValue::from_str(&format!("{}{secret}", self.prefix)).is_err() {
            return Err(format!(
                "{} gave a secret that cannot be sent in a header (control characters?)",
                self.describe()
            ));
        }
        Ok(secret)
    }

    async fn run(&self, argv: &[String]) -> Result<String, String> {
        let child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run credentials command {}: {e}", argv[0]))?;
        let out = tokio::time::timeout(self.command_timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                format!(
                    "credentials command {} did not finish within {} ms",
                    argv[0],
                    self.command_timeout.as_millis()
                )
            })?
            .map_err(|e| format!("credentials command {}: {e}", argv[0]))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "credentials command {} failed ({}): {}",
                argv[0],
                out.status,
                stderr.trim()
            ));
        }
        String::from_utf8(out.stdout)
            .map_err(|_| format!("credentials command {} printed non-UTF-8", argv[0]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(f: impl FnOnce(&mut CredentialsConfig)) -> CredentialsConfig {
        let mut c: CredentialsConfig = toml::from_str("").unwrap();
        f(&mut c);
        c
    }

    #[test]
    fn exactly_one_source() {
        let none = config(|_| {});
        assert!(none.check("p").unwrap_err().contains("exactly one"));
        let two = config(|c| {
            c.token = Some("a".into());
            c.token_file = Some("f".into());
        });
        assert!(two.check("p").unwrap_err().contains("2 given"));
        let bad_header = config(|c| {
            c.token = Some("a".into());
            c.header = "bad header".into();
        });
        assert!(bad_header.check("p").unwrap_err().contains("p.header"));
    }

    #[tokio::test]
    async fn file_is_reread_on_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old\n").unwrap();
        let c = config(|c| c.token_file = Some(path.clone()));
        let creds = Credentials::load(&c, "p").await.unwrap();
        assert_eq!(creds.header().1, "Bearer old");
        assert_eq!(creds.refresh(0).await.unwrap(), Refresh::Unchanged);
        std::fs::write(&path, "new").unwrap();
        assert_eq!(creds.refresh(0).await.unwrap(), Refresh::Changed);
        assert_eq!(creds.header().1, "Bearer new");
        assert!(creds.header().1.is_sensitive());
        // A call that began before that change is told to try again, though the file now
        // holds what is already in use.
        assert_eq!(creds.refresh(0).await.unwrap(), Refresh::Changed);
        assert_eq!(creds.refresh(1).await.unwrap(), Refresh::Unchanged);
        assert_eq!(creds.refreshes(), 4);
    }

    #[tokio::test]
    async fn command_provider() {
        let c = config(|c| c.token_command = Some(vec!["echo".into(), "s3cret".into()]));
        let creds = Credentials::load(&c, "p").await.unwrap();
        assert_eq!(creds.header().1, "Bearer s3cret");
        let failing = config(|c| c.token_command = Some(vec!["false".into()]));
        let err = Credentials::load(&failing, "plugins.x.credentials")
            .await
            .unwrap_err();
        assert!(err.starts_with("plugins.x.credentials: credentials command false failed"));
    }

    #[tokio::test]
    async fn fixed_tokens_do_not_refresh() {
        let c = config(|c| c.token = Some("t".into()));
        let creds = Credentials::load(&c, "p").await.unwrap();
        assert_eq!(creds.refresh(0).await.unwrap(), Refresh::Unchanged);
        let missing = config(|c| c.token_file = Some("/nonexistent/token".into()));
        let err = Credentials::load(&missing, "p").await.unwrap_err();
        assert!(
            err.contains("cannot read token file /nonexistent/token"),
            "{err}"
        );
    }
}
