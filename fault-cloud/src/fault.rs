//! What the server can do instead of (or after) answering a request, in one text syntax shared by
//! the Rust API, the control endpoints and the command line: `503`, `429:7`, `hang`, `reset`,
//! `after:reset`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Answer with this status (400..=599) and a small JSON error body.
    Status(u16),
    /// Answer 429 with `Retry-After: retry_after_secs`.
    Throttle { retry_after_secs: u64 },
    /// Never answer: only the client's timeout ends the request.
    Hang,
    /// Drop the TCP connection with a reset (SO_LINGER 0), without any HTTP response.
    Reset,
    /// No fault: answer as usual. Scripted before other faults, it lets requests through so
    /// that a fault strikes exactly the request it is meant for.
    Pass,
}

/// A fault and when it strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultSpec {
    pub fault: Fault,
    /// Strike after the request was handled (an object may have been created): the client sees
    /// the fault, not the result — the ambiguous failure that idempotency keys exist for.
    pub after: bool,
}

impl FaultSpec {
    pub fn before(fault: Fault) -> Self {
        Self {
            fault,
            after: false,
        }
    }

    pub fn after(fault: Fault) -> Self {
        Self { fault, after: true }
    }
}

impl From<Fault> for FaultSpec {
    fn from(fault: Fault) -> Self {
        Self::before(fault)
    }
}

/// Why a fault, rate or method could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Default `Retry-After` of a bare `429`.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

impl FromStr for Fault {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || {
            ParseError(format!(
                "unknown fault {s:?}: expected a status 400..=599, 429:SECS, hang, reset or pass"
            ))
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "hang" => Ok(Fault::Hang),
            "reset" => Ok(Fault::Reset),
            "pass" => Ok(Fault::Pass),
            "429" => Ok(Fault::Throttle {
                retry_after_secs: DEFAULT_RETRY_AFTER_SECS,
            }),
            t => {
                if let Some(secs) = t.strip_prefix("429:") {
                    let retry_after_secs = secs.parse().map_err(|_| bad())?;
                    return Ok(Fault::Throttle { retry_after_secs });
                }
                match t.parse::<u16>() {
                    Ok(code) if (400..=599).contains(&code) => Ok(Fault::Status(code)),
                    _ => Err(bad()),
                }
            }
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status(code) => write!(f, "{code}"),
            Fault::Throttle { retry_after_secs } => write!(f, "429:{retry_after_secs}"),
            Fault::Hang => f.write_str("hang"),
            Fault::Reset => f.write_str("reset"),
            Fault::Pass => f.write_str("pass"),
        }
    }
}

impl FromStr for FaultSpec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let t = s.trim();
        match t.strip_prefix("after:") {
            Some(rest) => Ok(FaultSpec::after(rest.parse()?)),
            None => Ok(FaultSpec::before(t.parse()?)),
        }
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.after {
            f.write_str("after:")?;
        }
        self.fault.fmt(f)
    }
}

// As strings in JSON too (also as map keys: `{"503": 0.2}`), so there is one syntax to learn.
macro_rules! serde_as_string {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_as_string!(Fault);
serde_as_string!(FaultSpec);

/// Parses `KIND=P` (the `--rate` argument), e.g. `503=0.2`, `after:reset=0.05`.
pub fn parse_rate(s: &str) -> Result<(FaultSpec, f64), ParseError> {
    let (kind, p) = s
        .rsplit_once('=')
        .ok_or_else(|| ParseError(format!("expected KIND=PROBABILITY, got {s:?}")))?;
    let p: f64 = p
        .trim()
        .parse()
        .map_err(|_| ParseError(format!("{s:?}: {p:?} is not a number")))?;
    Ok((kind.parse()?, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syntax_round_trips() {
        for s in [
            "500",
            "503",
            "401",
            "429:7",
            "hang",
            "reset",
            "pass",
            "after:503",
        ] {
            assert_eq!(s.parse::<FaultSpec>().unwrap().to_string(), s);
        }
        assert_eq!(
            "429".parse::<Fault>().unwrap(),
            Fault::Throttle {
                retry_after_secs: 1
            }
        );
        assert!("200".parse::<Fault>().is_err());
        assert!("boom".parse::<FaultSpec>().is_err());
        assert_eq!(
            parse_rate("after:reset=0.25").unwrap(),
            (FaultSpec::after(Fault::Reset), 0.25)
        );
    }
}
