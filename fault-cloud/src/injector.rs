//! Choosing the fault for each request: a scripted FIFO queue first, then a probabilistic mix
//! drawn from a seeded RNG so that a run can be reproduced.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::fault::{FaultSpec, ParseError};

/// The probabilistic part: each eligible request gets at most one fault, fault `f` with
/// probability `rates[f]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    #[serde(default)]
    pub rates: BTreeMap<FaultSpec, f64>,
    /// Methods the mix applies to (e.g. `["POST"]`); empty means all. Scripted faults ignore it.
    #[serde(default)]
    pub only_methods: Vec<String>,
    /// Seed of the RNG; `None` keeps the current one (a new random seed at start).
    #[serde(default)]
    pub seed: Option<u64>,
    /// A fixed delay before each cloud request is handled (whatever its method), to simulate a
    /// cloud whose round trips, not its throughput, bound a client. Control endpoints are never
    /// delayed.
    #[serde(default)]
    pub latency_ms: u64,
}

impl Mix {
    /// Checks the probabilities and normalises method names to upper case.
    pub fn validated(mut self) -> Result<Self, ParseError> {
        let mut total = 0.0;
        for (spec, p) in &self.rates {
            if !(0.0..=1.0).contains(p) {
                return Err(ParseError(format!(
                    "rate of {spec} is {p}: a probability is between 0 and 1"
                )));
            }
            total += p;
        }
        if total > 1.0 + 1e-9 {
            return Err(ParseError(format!(
                "the rates add up to {total}: at most one fault per request, so at most 1"
            )));
        }
        for m in &mut self.only_methods {
            let up = m.trim().to_ascii_uppercase();
            if up.is_empty() || !up.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(ParseError(format!("{m:?} is not an HTTP method")));
            }
            *m = up;
        }
        Ok(self)
    }
}

pub(crate) struct Injector {
    scripted: VecDeque<FaultSpec>,
    mix: Mix,
    seed: u64,
    rng: StdRng,
}

impl Injector {
    /// `mix` must be validated.
    pub fn new(mix: Mix) -> Self {
        let seed = mix.seed.unwrap_or_else(rand::random);
        Self {
            scripted: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            seed,
            mix,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn mix(&self) -> Mix {
        Mix {
            seed: Some(self.seed),
            ..self.mix.clone()
        }
    }

    pub fn push(&mut self, spec: FaultSpec) {
        self.scripted.push_back(spec);
    }

    pub fn queued(&self) -> usize {
        self.scripted.len()
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.mix.latency_ms)
    }

    /// Replaces the mix; a given seed restarts the RNG (so the same sequence follows).
    pub fn set_mix(&mut self, mix: Mix) {
        if let Some(seed) = mix.seed {
            self.seed = seed;
            self.rng = StdRng::seed_from_u64(seed);
        }
        self.mix = mix;
    }

    /// The fault for the next request, if any. The RNG is drawn only for requests the mix
    /// applies to, so the sequence they see depends on the seed alone.
    pub fn next(&mut self, method: &str) -> Option<FaultSpec> {
        if let Some(spec) = self.scripted.pop_front() {
            return Some(spec);
        }
        if self.mix.rates.is_empty()
            || !(self.mix.only_methods.is_empty()
                || self.mix.only_methods.iter().any(|m| m == method))
        {
            return None;
        }
        let x: f64 = self.rng.random();
        let mut acc = 0.0;
        for (spec, p) in &self.mix.rates {
            acc += p;
            if x < acc {
                return Some(*spec);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Fault;

    #[test]
    fn scripted_faults_come_first_and_in_order() {
        let mut i = Injector::new(Mix::default());
        i.push(Fault::Status(503).into());
        i.push(Fault::Reset.into());
        assert_eq!(i.next("GET"), Some(Fault::Status(503).into()));
        assert_eq!(i.next("GET"), Some(Fault::Reset.into()));
        assert_eq!(i.next("GET"), None);
    }

    #[test]
    fn rates_are_checked() {
        let mix = |p: f64| Mix {
            rates: [(Fault::Status(500).into(), p)].into(),
            ..Mix::default()
        };
        assert!(mix(1.5).validated().is_err());
        assert!(mix(-0.1).validated().is_err());
        assert!(mix(0.5).validated().is_ok());
    }
}
