//! Which URLs a plugin may reach: rules of the form `scheme://host[:port]` from `kiln.toml`.
//!
//! `host` is exact (`api.example.com`, `127.0.0.1`, `[::1]`), a subdomain wildcard
//! (`*.example.com`, which does not match `example.com` itself) or `*`; `port` is a number or
//! `*`, and defaults to the scheme's port. Paths are not part of a rule.

use std::fmt;

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    text: String,
    scheme: String,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    Suffix(String),
}

/// The rules of one plugin. Empty means no outgoing HTTP at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<AllowRule>,
}

impl AllowRule {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("bad allow_http rule {text:?}: {why}"));
        let Some((scheme, rest)) = text.split_once("://") else {
            return bad("expected scheme://host[:port], e.g. https://api.example.com");
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return bad("scheme must be http or https");
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return bad("a rule names scheme, host and port only (no path, query or user)");
        }
        // Split off the port, minding IPv6 literals like [::1]:8080.
        let (host, port) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        let port = match port {
            None => Some(if scheme == "https" { 443 } else { 80 }),
            Some("*") => None,
            Some(p) => match p.parse::<u16>() {
                Ok(p) => Some(p),
                Err(_) => return bad("port must be a number or *"),
            },
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return bad("a wildcard host is *.domain");
            }
            HostPattern::Suffix(format!(".{suffix}"))
        } else if host.is_empty() || host.contains('*') {
            return bad("host must be a name, an IP address, *.domain or *");
        } else {
            // Normalise through the URL parser so 127.1 and 127.0.0.1 compare equal.
            match Url::parse(&format!("{scheme}://{host}/")) {
                Ok(u) => HostPattern::Exact(u.host_str().unwrap_or_default().to_string()),
                Err(e) => return bad(&e.to_string()),
            }
        };
        Ok(Self {
            text: text.to_string(),
            scheme,
            host,
            port,
        })
    }

    fn matches(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.ends_with(s.as_str()),
        };
        host_ok
            && self
                .port
                .is_none_or(|p| Some(p) == url.port_or_known_default())
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl AllowList {
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, String> {
        let rules = rules
            .iter()
            .map(|r| AllowRule::parse(r.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    pub fn rules(&self) -> &[AllowRule] {
        &self.rules
    }

    /// The rule admitting `url`, or an explanation naming the URL and the rules.
    pub fn check(&self, url: &Url) -> Result<&AllowRule, String> {
        if let Some(rule) = self.rules.iter().find(|r| r.matches(url)) {
            return Ok(rule);
        }
        let origin = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        if self.rules.is_empty() {
            Err(format!(
                "request to {url} denied: the plugin has no allow_http rules, so it may not make \
                 HTTP requests (add e.g. \"{}://{}\" to its allow_http in kiln.toml)",
                url.scheme(),
                url.host_str().unwrap_or("")
            ))
        } else {
            let list: Vec<&str> = self.rules.iter().map(|r| r.text.as_str()).collect();
            Err(format!(
                "request to {url} denied: {origin} matches no allow_http rule (rules: {})",
                list.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(rules: &[&str], url: &str) -> bool {
        AllowList::parse(rules)
            .unwrap()
            .check(&Url::parse(url).unwrap())
            .is_ok()
    }

    #[test]
    fn exact_host_and_default_port() {
        assert!(allows(
            &["https://api.example.com"],
            "https://api.example.com/v1/x"
        ));
        assert!(allows(
            &["https://api.example.com"],
            "https://API.example.com:443/"
        ));
        assert!(!allows(
            &["https://api.example.com"],
            "http://api.example.com/"
        ));
        assert!(!allows(
            &["https://api.example.com"],
            "https://api.example.com:8443/"
        ));
        assert!(!allows(
            &["https://api.example.com"],
            "https://evil.com/?api.example.com"
        ));
    }

    #[test]
    fn ports_and_wildcards() {
        assert!(allows(&["http://127.0.0.1:*"], "http://127.0.0.1:9999/"));
        assert!(allows(&["http://127.0.0.1:8080"], "http://127.1:8080/"));
        assert!(!allows(
            &["http://127.0.0.1:8080"],
            "http://127.0.0.1:8081/"
        ));
        assert!(allows(
            &["https://*.example.com"],
            "https://a.b.example.com/"
        ));
        assert!(!allows(&["https://*.example.com"], "https://example.com/"));
        assert!(!allows(
            &["https://*.example.com"],
            "https://badexample.com/"
        ));
        assert!(allows(&["http://[::1]:8080"], "http://[::1]:8080/x"));
        assert!(allows(&["http://*:*"], "http://anything:1/"));
    }

    #[test]
    fn empty_list_denies_with_advice() {
        let err = AllowList::default()
            .check(&Url::parse("http://10.0.0.1/x").unwrap())
            .unwrap_err();
        assert!(
            err.contains("http://10.0.0.1/x") && err.contains("no allow_http rules"),
            "{err}"
        );
    }

    #[test]
    fn denial_names_url_and_rules() {
        let list = AllowList::parse(&["http://127.0.0.1:80"]).unwrap();
        let err = list
            .check(&Url::parse("http://127.0.0.1:81/a").unwrap())
            .unwrap_err();
        assert!(
            err.contains("http://127.0.0.1:81/a") && err.contains("http://127.0.0.1:80"),
            "{err}"
        );
    }

    #[test]
    fn bad_rules_are_named() {
        for bad in [
            "example.com",
            "ftp://x",
            "http://x/path",
            "http://x:port",
            "http://a*b",
        ] {
            let err = AllowRule::parse(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
