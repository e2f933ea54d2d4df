//! The states of stacks, resources, jobs and events, as types: the legal values can be read
//! here and nowhere else. Text appears only at the edges: the store binds `as_str()` and
//! parses what it reads (an unknown value is corrupt data), and serde writes the same text in
//! the API and the CLI's JSON, so the wire is the database's vocabulary.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that is not one of a type's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {kind} (expected one of: {expected})")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// An enum of unit variants, each with one name: `as_str`, `Display`, `FromStr`, serde as that
/// name, and comparison with a `&str` (for tests and the few places that match on text).
macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident ($kind:literal) { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        kind: $kind,
                        value: s.to_string(),
                        expected: concat!($($text, " "),+).trim_ascii_end(),
                    }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownValue;

            fn try_from(s: String) -> Result<Self, UnknownValue> {
                s.parse()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
    };
}

named_enum! {
    /// What a stack or a resource is doing or last did (Heat's action).
    Action ("action") {
        /// A resource row made for a template, not yet acted on.
        Init = "INIT",
        Create = "CREATE",
        Update = "UPDATE",
        Delete = "DELETE",
        Check = "CHECK",
        /// An update back to the previous template after a failed create or update.
        Rollback = "ROLLBACK",
    }
}

named_enum! {
    /// How a stack's or a resource's action stands (Heat's status).
    Status ("status") {
        InProgress = "IN_PROGRESS",
        Complete = "COMPLETE",
        Failed = "FAILED",
    }
}

named_enum! {
    /// What an event records: a status change, or something that happened to a job on the way.
    EventStatus ("event status") {
        InProgress = "IN_PROGRESS",
        Complete = "COMPLETE",
        Failed = "FAILED",
        /// A call failed and runs again later (the retry policy's decision).
        Retry = "RETRY",
        /// The leader freed a job whose engine's lease expired.
        Rescued = "RESCUED",
        /// The plugin's credentials were refreshed after an unauthorized answer.
        Reauthorized = "REAUTHORIZED",
    }
}

named_enum! {
    /// The work of one job row.
    JobOp ("job operation") {
        Create = "create",
        /// Converge the resource on the new template: nothing, in place, or a replacement.
        Update = "update",
        Delete = "delete",
        Check = "check",
        /// Delete what an update removed or replaced, once the rest is done.
        Cleanup = "cleanup",
    }
}

named_enum! {
    /// What a resource failure does to the rest of an action.
    OnFailure ("on_failure value") {
        /// Start nothing new; running work finishes and is recorded (Heat's behaviour).
        Stop = "stop",
        /// Go on with every branch that does not need the failed resource.
        Continue = "continue",
    }
}

named_enum! {
    /// What an update would do to a resource, as a preview says it.
    PlannedAction ("planned change") {
        Create = "create",
        /// In place.
        Update = "update",
        Replace = "replace",
        Delete = "delete",
        Unchanged = "unchanged",
        /// The update would fail on it (a property it cannot evaluate, a forbidden change).
        Rejected = "rejected",
    }
}

named_enum! {
    /// An engine process as the registry sees it.
    Liveness ("engine status") {
        Up = "up",
        /// Shutting down: claims nothing new, lets running calls finish.
        Draining = "draining",
        Stopped = "stopped",
        /// No heartbeat within its lease.
        Dead = "dead",
    }
}

impl From<Status> for EventStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::InProgress => EventStatus::InProgress,
            Status::Complete => EventStatus::Complete,
            Status::Failed => EventStatus::Failed,
        }
    }
}

impl JobOp {
    /// The resource action the job performs (an update job may also create a replacement;
    /// a cleanup deletes).
    pub fn action(self) -> Action {
        match self {
            JobOp::Create => Action::Create,
            JobOp::Update => Action::Update,
            JobOp::Delete | JobOp::Cleanup => Action::Delete,
            JobOp::Check => Action::Check,
        }
    }
}

impl Action {
    /// The operation of the jobs a stack action's traversal runs (a rollback is an update back
    /// to the previous template). `None` for `INIT`, which is no stack action.
    pub fn job_op(self) -> Option<JobOp> {
        match self {
            Action::Init => None,
            Action::Create => Some(JobOp::Create),
            Action::Update | Action::Rollback => Some(JobOp::Update),
            Action::Delete => Some(JobOp::Delete),
            Action::Check => Some(JobOp::Check),
        }
    }
}

impl Default for OnFailure {
    fn default() -> Self {
        OnFailure::Stop
    }
}

impl clap::ValueEnum for OnFailure {
    fn value_variants<'a>() -> &'a [Self] {
        Self::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(*a));
        }
        for s in EventStatus::ALL {
            assert_eq!(
                serde_json::from_value::<EventStatus>(serde_json::to_value(s).unwrap()).unwrap(),
                *s
            );
        }
        let e = "PAUSED".parse::<Status>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"PAUSED\" is not a status (expected one of: IN_PROGRESS COMPLETE FAILED)"
        );
        assert_eq!(Status::Complete, "COMPLETE");
        assert_eq!(JobOp::Cleanup.action(), Action::Delete);
        assert_eq!(Action::Rollback.job_op(), Some(JobOp::Update));
    }
}
