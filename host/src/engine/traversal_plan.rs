//! A traversal's plan: the stack's template as an engine works from it (the validated stack
//! parsed from the store), the reverse of its dependency graph (what to wake when a resource
//! is done), and for a delete the order in which the stack's rows go. Not to be confused with
//! a preview's `PlannedChange`s, which say what an update would do.

use std::collections::HashMap;

use crate::store::{ResourceRow, StackRow, StoreError};
use crate::template;

pub(super) struct TraversalPlan {
    pub stack_id: String,
    pub stack_name: String,
    pub traversal: i64,
    pub stack: template::Stack,
    /// The hidden values to mask in what its jobs say: this stack's, and for an update the
    /// ones it replaces (a plugin's message about the old object may quote them).
    pub secrets: template::Secrets,
    dependents: HashMap<String, Vec<String>>,
    /// For a DELETE traversal: every row of the stack, including objects an update replaced or
    /// removed and had not deleted yet.
    pub removal: Option<Removal>,
}

impl TraversalPlan {
    pub fn parse(row: &StackRow, template: &str) -> Result<Self, StoreError> {
        let stack: template::Stack = serde_json::from_str(template)
            .map_err(|e| StoreError::Corrupt(format!("template of stack {}: {e}", row.name)))?;
        let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
        for r in stack.resources.values() {
            for d in &r.depends_on {
                dependents
                    .entry(d.clone())
                    .or_default()
                    .push(r.name.clone());
            }
        }
        Ok(Self {
            stack_id: row.id.clone(),
            stack_name: row.name.clone(),
            traversal: row.traversal,
            secrets: stack.secrets(),
            stack,
            dependents,
            removal: None,
        })
    }

    /// The resources that depend on `name`.
    pub fn dependents(&self, name: &str) -> &[String] {
        self.dependents.get(name).map_or(&[], Vec::as_slice)
    }

    /// The order in which `rows` are deleted: a resource of the template by its dependencies
    /// there, any other row by those recorded when it was last applied.
    pub fn removal_of(&self, rows: &[ResourceRow]) -> Removal {
        Removal::new(rows.iter().map(|r| {
            let requires = match self.stack.resource(&r.name) {
                Some(res) => res.depends_on.clone(),
                None => recorded_requires(r),
            };
            (r.name.clone(), requires)
        }))
    }
}

/// The dependencies a row recorded when it was last applied (none if it predates recording).
pub(super) fn recorded_requires(r: &ResourceRow) -> Vec<String> {
    r.requires
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// The resource a row stands for: rows of replaced objects are named `NAME/replaced-N`
/// (template names cannot contain `/`).
pub(super) fn logical(row_name: &str) -> &str {
    row_name.split('/').next().unwrap_or(row_name)
}

/// Reverse dependency order over a set of rows: a row goes only after every row that
/// required it (or any of its resource's other rows) is gone.
pub(super) struct Removal {
    names: Vec<String>,
    after: HashMap<String, Vec<String>>,
    next: HashMap<String, Vec<String>>,
}

impl Removal {
    /// `rows`: each row's name and the resource names it requires.
    pub fn new(rows: impl IntoIterator<Item = (String, Vec<String>)>) -> Self {
        let rows: Vec<(String, Vec<String>)> = rows.into_iter().collect();
        let mut by_resource: HashMap<&str, Vec<&str>> = HashMap::new();
        for (name, _) in &rows {
            by_resource.entry(logical(name)).or_default().push(name);
        }
        let mut after: HashMap<String, Vec<String>> = HashMap::new();
        let mut next: HashMap<String, Vec<String>> = HashMap::new();
        for (name, requires) in &rows {
            for required in requires {
                for target in by_resource.get(required.as_str()).into_iter().flatten() {
                    if logical(target) == logical(name) {
                        continue;
                    }
                    after
                        .entry(target.to_string())
                        .or_default()
                        .push(name.clone());
                    next.entry(name.clone())
                        .or_default()
                        .push(target.to_string());
                }
            }
        }
        Self {
            names: rows.into_iter().map(|(n, _)| n).collect(),
            after,
            next,
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The rows that must be deleted before `name`.
    pub fn after(&self, name: &str) -> &[String] {
        self.after.get(name).map_or(&[], Vec::as_slice)
    }

    /// The rows that may be ready once `name` is deleted.
    pub fn next(&self, name: &str) -> &[String] {
        self.next.get(name).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::Removal;

    fn rows(list: &[(&str, &[&str])]) -> Removal {
        Removal::new(list.iter().map(|(n, r)| {
            (
                n.to_string(),
                r.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        }))
    }

    #[test]
    fn dependents_go_first_and_replaced_copies_count_as_their_resource() {
        let r = rows(&[
            ("net", &[]),
            ("server", &["net"]),
            ("server/replaced-2", &["net"]),
            ("volume", &[]),
        ]);
        let mut after: Vec<&String> = r.after("net").iter().collect();
        after.sort();
        assert_eq!(after, ["server", "server/replaced-2"]);
        assert!(r.after("server").is_empty());
        assert_eq!(r.next("server/replaced-2"), ["net"]);
        assert!(r.after("volume").is_empty() && r.next("volume").is_empty());
        // A replaced copy does not wait for its own resource's new object.
        let r = rows(&[("a", &[]), ("a/replaced-3", &["a"])]);
        assert!(r.after("a").is_empty());
    }
}
