//! Answers a template's `get_resource`, `get_attr` and pseudo parameters from stored resources:
//! for a job, from its dependencies' rows; for outputs, from all of the stack's.

use std::collections::HashMap;

use serde_json::Value;

use crate::store::ResourceRow;
use crate::template::Resolver;

pub struct StoredResolver {
    rows: HashMap<String, ResourceRow>,
    stack_name: String,
    stack_id: String,
}

impl StoredResolver {
    pub fn new(rows: Vec<ResourceRow>, stack_name: &str, stack_id: &str) -> Self {
        Self {
            rows: rows.into_iter().map(|r| (r.name.clone(), r)).collect(),
            stack_name: stack_name.to_string(),
            stack_id: stack_id.to_string(),
        }
    }
}

impl Resolver for StoredResolver {
    fn physical_id(&self, resource: &str) -> Option<String> {
        self.rows.get(resource)?.physical_id.clone()
    }

    fn attribute(&self, resource: &str, attribute: &str) -> Option<Value> {
        let attrs = self.rows.get(resource)?.attributes.as_ref()?;
        if attribute == "show" {
            return Some(attrs.clone());
        }
        attrs.get(attribute).cloned()
    }

    fn stack_parameter(&self, name: &str) -> Option<Value> {
        match name {
            "OS::stack_name" => Some(Value::String(self.stack_name.clone())),
            "OS::stack_id" => Some(Value::String(self.stack_id.clone())),
            // Projects (tenancy) arrive with the API.
            "OS::project_id" => Some(Value::String(String::new())),
            _ => None,
        }
    }
}
