//! What an update would do, without doing it (`kiln stack preview`, `stack update
//! --dry-run`): the same decision as the update's (`change::decide`), made from the stored
//! resources in dependency order, calling no plugin. Values a change makes (the new id of a
//! replacement, attributes after an in-place update) are not known yet: they show as
//! "(known after apply)", and whatever depends on them counts as changed.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::model::{PlannedAction, Status};
use serde_json::Value;

use super::change::{Change, Existing, changed_properties, decide, quoted};
use super::update::holds_object;
use super::{Engine, StoredResolver};
use crate::store::{ResourceRow, StackRow, StoreError};
use crate::template::{self, Resolver};

/// Stands for a value only the update will produce.
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";

/// One resource in a preview.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PlannedChange {
    pub resource: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub action: PlannedAction,
    pub reason: String,
    /// The properties that change (for update and replace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<PropertyChange>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PropertyChange {
    pub name: String,
    pub old: Value,
    pub new: Value,
}

/// What a planned change leaves unknown until it is applied.
#[derive(Clone, Copy, PartialEq)]
enum Unknown {
    /// A new object: its id and attributes.
    Identity,
    /// An object updated in place: its attributes.
    Attributes,
}

struct PreviewResolver<'a> {
    stored: &'a StoredResolver,
    unknown: &'a HashMap<String, Unknown>,
    used_unknown: Cell<bool>,
}

impl PreviewResolver<'_> {
    fn unknown(&self) -> Value {
        self.used_unknown.set(true);
        Value::String(KNOWN_AFTER_APPLY.into())
    }
}

impl Resolver for PreviewResolver<'_> {
    fn physical_id(&self, resource: &str) -> Option<String> {
        match self.unknown.get(resource) {
            Some(Unknown::Identity) => {
                self.used_unknown.set(true);
                Some(KNOWN_AFTER_APPLY.into())
            }
            _ => self.stored.physical_id(resource),
        }
    }

    fn attribute(&self, resource: &str, attribute: &str) -> Option<Value> {
        match self.unknown.get(resource) {
            Some(_) => Some(self.unknown()),
            None => self.stored.attribute(resource, attribute),
        }
    }

    fn stack_parameter(&self, name: &str) -> Option<Value> {
        self.stored.stack_parameter(name)
    }
}

impl Engine {
    /// What updating the stack to `stack` would do, resource by resource, in dependency
    /// order; resources the update would delete come last.
    pub async fn preview(
        &self,
        name_or_id: &str,
        stack: &template::Stack,
    ) -> Result<(StackRow, Vec<PlannedChange>), StoreError> {
        let row = self.inner.store.find_stack(name_or_id).await?;
        let rows = self.inner.store.resources(&row.id).await?;
        let by_name: HashMap<&str, &ResourceRow> =
            rows.iter().map(|r| (r.name.as_str(), r)).collect();
        let stored = StoredResolver::new(rows.clone(), &row.name, &row.id);
        // Old values are the stored stack's, new ones the new stack's: hidden values of both
        // are masked in what the preview shows.
        let old_secrets = match self.inner.store.stack_template(&row.id).await {
            Ok(text) => serde_json::from_str::<template::Stack>(&text)
                .map(|s| s.secrets())
                .unwrap_or_default(),
            Err(_) => template::Secrets::default(),
        };
        let new_secrets = stack.secrets();
        let mask = |v: Value| new_secrets.value(&old_secrets.value(&v));
        let mut unknown: HashMap<String, Unknown> = HashMap::new();
        let mut out = Vec::new();
        for res in stack.in_order() {
            let resolver = PreviewResolver {
                stored: &stored,
                unknown: &unknown,
                used_unknown: Cell::new(false),
            };
            let evaluated = stack.properties(&res.name, &resolver);
            let mut planned = PlannedChange {
                resource: res.name.clone(),
                type_name: res.served_type.clone(),
                action: PlannedAction::Unchanged,
                reason: String::new(),
                properties: Vec::new(),
            };
            let current = by_name.get(res.name.as_str()).filter(|r| holds_object(r));
            let Some(current) = current else {
                planned.action = PlannedAction::Create;
                planned.reason = if by_name.contains_key(res.name.as_str()) {
                    "not created yet".into()
                } else {
                    "new in the template".into()
                };
                unknown.insert(res.name.clone(), Unknown::Identity);
                out.push(planned);
                continue;
            };
            let props = match evaluated {
                Ok(p) => p,
                Err(e) if resolver.used_unknown.get() => {
                    // A typed property gets a value only the update will produce.
                    planned.action = PlannedAction::Update;
                    planned.reason = format!(
                        "its properties depend on values known after apply ({e}); an update \
                         in place or a replacement is decided then"
                    );
                    unknown.insert(res.name.clone(), Unknown::Identity);
                    out.push(planned);
                    continue;
                }
                Err(e) => {
                    planned.action = PlannedAction::Rejected;
                    planned.reason = e.to_string();
                    out.push(planned);
                    continue;
                }
            };
            let old: Option<Value> = current.applied_properties();
            let change = decide(
                &Existing {
                    type_name: &current.type_name,
                    properties: old.as_ref(),
                },
                &res.served_type,
                &props,
                stack.types.get(&res.served_type),
            );
            let internal = crate::template::is_builtin(&res.served_type);
            if let Some(old) = old.as_ref().filter(|_| !internal) {
                planned.properties = changed_properties(old, &props)
                    .into_iter()
                    .map(|name| PropertyChange {
                        old: mask(old.get(&name).cloned().unwrap_or(Value::Null)),
                        new: mask(props.get(&name).cloned().unwrap_or(Value::Null)),
                        name,
                    })
                    .collect();
            }
            let failed = if current.status == Status::Complete {
                ""
            } else {
                "it failed before and is checked first (created again if gone, replaced if \
                 drifted); "
            };
            let (action, reason) = match change {
                Change::Unchanged => (PlannedAction::Unchanged, String::new()),
                Change::Update { changed } => {
                    unknown.insert(res.name.clone(), Unknown::Attributes);
                    let why = match res.served_type.as_str() {
                        crate::template::GROUP_TYPE => "its members change".to_string(),
                        crate::template::PAUSE_TYPE => {
                            "pauses: the batch before changes".to_string()
                        }
                        _ => format!("{} changed", quoted(&changed)),
                    };
                    (PlannedAction::Update, why)
                }
                Change::Replace { why, .. } => {
                    unknown.insert(res.name.clone(), Unknown::Identity);
                    let order = match self.plugins().replace_order(&res.served_type) {
                        crate::config::ReplaceOrder::DeleteFirst => {
                            " (the old object is deleted first)"
                        }
                        crate::config::ReplaceOrder::CreateFirst => "",
                    };
                    (PlannedAction::Replace, format!("{why}{order}"))
                }
                Change::Rejected { why } => (PlannedAction::Rejected, why),
            };
            planned.action = action;
            let reason = format!("{failed}{reason}");
            // A rejection (an immutable property, say) may quote a value.
            planned.reason = new_secrets.text(&old_secrets.text(reason.trim_end_matches("; ")));
            out.push(planned);
        }
        // The cleanup deletes these last (dependents first); listed by name.
        let kept: HashSet<&str> = stack.resources.keys().map(String::as_str).collect();
        let mut removed: Vec<&ResourceRow> = rows
            .iter()
            .filter(|r| !kept.contains(r.name.as_str()))
            .collect();
        removed.sort_by(|a, b| a.name.cmp(&b.name));
        for r in removed {
            let reason = if r.name.contains('/') {
                "an object replaced earlier, not deleted yet"
            } else {
                "not in the new template"
            };
            out.push(PlannedChange {
                resource: r.name.clone(),
                type_name: r.type_name.clone(),
                action: PlannedAction::Delete,
                reason: reason.into(),
                properties: Vec::new(),
            });
        }
        Ok((row, out))
    }
}
