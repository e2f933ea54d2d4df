//! A stack's template as an engine works from it: the validated stack parsed from the store,
//! and the reverse of its dependency graph (what to wake when a resource is done).

use std::collections::HashMap;

use crate::store::{StackRow, StoreError};
use crate::template;

pub(super) struct Plan {
    pub stack_id: String,
    pub stack_name: String,
    pub traversal: i64,
    pub stack: template::Stack,
    dependents: HashMap<String, Vec<String>>,
}

impl Plan {
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
            stack,
            dependents,
        })
    }

    /// The resources that depend on `name`.
    pub fn dependents(&self, name: &str) -> &[String] {
        self.dependents.get(name).map_or(&[], Vec::as_slice)
    }
}
