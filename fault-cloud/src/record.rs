//! The request log and what it adds up to: counts by status and fault, and objects created per
//! idempotency key (the proof that a client created each object exactly once).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::fault::FaultSpec;

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// 1, 2, ... in arrival order.
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    /// The status the client got; none after `hang` or `reset`.
    pub status: Option<u16>,
    /// The fault injected into this request, if any.
    pub fault: Option<FaultSpec>,
    /// The object this request created (also when a fault after handling hid it).
    pub created: Option<String>,
    /// How its `Authorization` fared; none while the server requires no token.
    pub auth: Option<Auth>,
    /// Its `X-*` headers (lowercase names): what a client chose to send beyond the protocol's
    /// own headers, for tests that need to see a value arrive.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub x_headers: BTreeMap<String, String>,
    pub unix_ms: u64,
    /// Since the server started.
    pub elapsed_ms: u64,
}

/// Per idempotency key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStats {
    pub requests: u64,
    pub created: u64,
}

/// What the log adds up to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    /// Refused with 401 for a missing or wrong token (counted in `statuses` too; injected 401s
    /// are not counted here).
    #[serde(default)]
    pub unauthorized: u64,
    /// By the status the client got (injected statuses included).
    pub statuses: BTreeMap<u16, u64>,
    /// By injected fault, e.g. `"503"`, `"reset"`, `"after:hang"`.
    pub faults: BTreeMap<String, u64>,
    pub objects_created: u64,
    pub objects_live: u64,
    /// Distinct idempotency keys seen.
    pub keys_seen: u64,
    /// Keys under which more than one object was created: empty when the client and the server
    /// both honour the keys.
    pub keys_created_more_than_once: Vec<String>,
    /// Scripted faults not yet consumed.
    pub scripted_pending: u64,
    /// The seed of the probabilistic mix (to reproduce the run).
    pub seed: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = |m: Vec<(String, u64)>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, n)| format!("{k}×{n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        writeln!(f, "requests: {}", self.requests)?;
        writeln!(f, "unauthorized: {}", self.unauthorized)?;
        let statuses = self.statuses.iter().map(|(k, n)| (k.to_string(), *n));
        writeln!(f, "statuses: {}", counts(statuses.collect()))?;
        let faults = self.faults.iter().map(|(k, n)| (k.clone(), *n));
        writeln!(f, "faults: {}", counts(faults.collect()))?;
        writeln!(
            f,
            "objects: {} created, {} live",
            self.objects_created, self.objects_live
        )?;
        writeln!(
            f,
            "idempotency keys: {} seen, {} created more than one object{}",
            self.keys_seen,
            self.keys_created_more_than_once.len(),
            if self.keys_created_more_than_once.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.keys_created_more_than_once.join(", "))
            }
        )?;
        write!(f, "seed: {}", self.seed)
    }
}

pub(crate) struct Log {
    started: Instant,
    records: Vec<RequestRecord>,
    keys: BTreeMap<String, KeyStats>,
    statuses: BTreeMap<u16, u64>,
    faults: BTreeMap<String, u64>,
    created: u64,
    unauthorized: u64,
}

/// A request being recorded.
pub(crate) struct Entry<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub key: Option<&'a str>,
    pub status: Option<u16>,
    pub fault: Option<FaultSpec>,
    pub created: Option<String>,
    pub auth: Option<Auth>,
    pub x_headers: BTreeMap<String, String>,
}

impl Log {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            records: Vec::new(),
            keys: BTreeMap::new(),
            statuses: BTreeMap::new(),
            faults: BTreeMap::new(),
            created: 0,
            unauthorized: 0,
        }
    }

    pub fn push(&mut self, e: Entry<'_>) {
        if let Some(k) = e.key {
            let ks = self.keys.entry(k.to_string()).or_default();
            ks.requests += 1;
            ks.created += u64::from(e.created.is_some());
        }
        if let Some(s) = e.status {
            *self.statuses.entry(s).or_default() += 1;
        }
        if let Some(f) = e.fault {
            *self.faults.entry(f.to_string()).or_default() += 1;
        }
        self.created += u64::from(e.created.is_some());
        self.unauthorized += u64::from(e.auth.is_some_and(|a| !a.is_ok()));
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.records.push(RequestRecord {
            seq: self.records.len() as u64 + 1,
            method: e.method.to_string(),
            path: e.path.to_string(),
            idempotency_key: e.key.map(str::to_string),
            status: e.status,
            fault: e.fault,
            created: e.created,
            auth: e.auth,
            x_headers: e.x_headers,
            unix_ms,
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        });
    }

    pub fn records(&self) -> &[RequestRecord] {
        &self.records
    }

    pub fn keys(&self) -> &BTreeMap<String, KeyStats> {
        &self.keys
    }

    /// The stats of the log; the caller fills in what the log does not know.
    pub fn stats(&self) -> Stats {
        Stats {
            requests: self.records.len() as u64,
            unauthorized: self.unauthorized,
            statuses: self.statuses.clone(),
            faults: self.faults.clone(),
            objects_created: self.created,
            keys_seen: self.keys.len() as u64,
            keys_created_more_than_once: self
                .keys
                .iter()
                .filter(|(_, s)| s.created > 1)
                .map(|(k, _)| k.clone())
                .collect(),
            ..Stats::default()
        }
    }
}
