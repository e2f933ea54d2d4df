//! The failed attempts of one operation, as stored on its job and as told to the user when a
//! policy gives up: "gave up after 6 attempts over 41 s: throttled (429) ×3, transient (503) ×3".

use serde::{Deserialize, Serialize};

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub kind: String,
    pub status: Option<u16>,
}

/// Groups attempts by kind and status, in order of first appearance.
pub fn summarize(attempts: &[Attempt], elapsed_ms: u64, reason: &str) -> String {
    let mut groups: Vec<(&Attempt, usize)> = Vec::new();
    for a in attempts {
        match groups.iter_mut().find(|(g, _)| *g == a) {
            Some((_, n)) => *n += 1,
            None => groups.push((a, 1)),
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(a, n)| {
            let status = a.status.map_or(String::new(), |s| format!(" ({s})"));
            let times = if *n > 1 {
                format!(" ×{n}")
            } else {
                String::new()
            };
            format!("{}{status}{times}", a.kind)
        })
        .collect();
    let s = if attempts.len() == 1 { "" } else { "s" };
    format!(
        "gave up after {} attempt{s} over {}: {} — {reason}",
        attempts.len(),
        duration(elapsed_ms),
        parts.join(", ")
    )
}

fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{} s", ms / 1000)
    } else {
        format!("{} min", ms / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(kind: &str, status: Option<u16>) -> Attempt {
        Attempt {
            kind: kind.into(),
            status,
        }
    }

    #[test]
    fn groups_attempts_in_order() {
        let history = [
            a("throttled", Some(429)),
            a("transient", Some(503)),
            a("throttled", Some(429)),
            a("transient", Some(503)),
            a("throttled", Some(429)),
            a("transient", Some(503)),
        ];
        assert_eq!(
            summarize(&history, 41_300, "reached max_attempts (6)"),
            "gave up after 6 attempts over 41 s: throttled (429) ×3, transient (503) ×3 — reached max_attempts (6)"
        );
        assert_eq!(
            summarize(&[a("fatal", None)], 5, "fatal errors are not retried"),
            "gave up after 1 attempt over 5 ms: fatal — fatal errors are not retried"
        );
    }
}
