//! What an update does to a resource that exists, decided from its type's schema: nothing
//! (the properties are as the template wants), an in-place update (only update-allowed
//! properties differ), a replacement (anything else differs, or the type changed), or a
//! refusal (an immutable property differs). Pure: the engine and the preview share it.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::template::ResourceSchema;

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Unchanged,
    /// Only properties that may change in place differ: the plugin's `update`.
    Update {
        changed: Vec<String>,
    },
    /// Create a replacement first, then delete the old object in the update's cleanup.
    Replace {
        why: String,
        changed: Vec<String>,
    },
    /// An immutable property differs: nothing is called.
    Rejected {
        why: String,
    },
}

/// The stored view of an object that exists.
pub struct Existing<'a> {
    pub type_name: &'a str,
    /// The properties last applied; None when its last create failed (none were).
    pub properties: Option<&'a Value>,
}

pub fn decide(
    old: &Existing,
    new_type: &str,
    new_properties: &Value,
    schema: Option<&ResourceSchema>,
) -> Change {
    if old.type_name != new_type {
        return Change::Replace {
            why: format!("its type changed from {} to {new_type}", old.type_name),
            changed: Vec::new(),
        };
    }
    let Some(old_properties) = old.properties else {
        return Change::Replace {
            why: "its last create did not complete".into(),
            changed: Vec::new(),
        };
    };
    let changed = changed_properties(old_properties, new_properties);
    if changed.is_empty() {
        return Change::Unchanged;
    }
    let spec = |k: &str| schema.and_then(|s| s.properties.get(k));
    let immutable: Vec<&String> = changed
        .iter()
        .filter(|k| spec(k).is_some_and(|p| p.immutable))
        .collect();
    if !immutable.is_empty() {
        let list: Vec<String> = immutable.iter().map(|k| format!("'{k}'")).collect();
        return Change::Rejected {
            why: format!(
                "immutable propert{} {} cannot change (not even by replacement)",
                if list.len() == 1 { "y" } else { "ies" },
                list.join(", ")
            ),
        };
    }
    // A property the schema does not list (open types such as OS::Heat::None) is the
    // plugin's to apply in place.
    let fixed: Vec<&String> = changed
        .iter()
        .filter(|k| match spec(k) {
            Some(p) => !p.update_allowed,
            None => schema.is_none(),
        })
        .collect();
    if fixed.is_empty() {
        return Change::Update { changed };
    }
    let list: Vec<String> = fixed.iter().map(|k| format!("'{k}'")).collect();
    Change::Replace {
        why: format!(
            "{} cannot change in place",
            if list.len() == 1 {
                format!("property {}", list[0])
            } else {
                format!("properties {}", list.join(", "))
            }
        ),
        changed,
    }
}

/// `'a', 'b'`: names as messages quote them.
pub fn quoted(names: &[String]) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    list.join(", ")
}

/// Top-level property names whose values differ (a missing property is null).
pub fn changed_properties(old: &Value, new: &Value) -> Vec<String> {
    let keys: BTreeSet<&String> = [old, new]
        .into_iter()
        .filter_map(Value::as_object)
        .flat_map(|m| m.keys())
        .collect();
    keys.into_iter()
        .filter(|k| {
            old.get(k.as_str()).unwrap_or(&Value::Null)
                != new.get(k.as_str()).unwrap_or(&Value::Null)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::template::{Kind, PropertySpec};

    fn schema() -> ResourceSchema {
        let prop = |update_allowed, immutable| PropertySpec {
            kind: Kind::String,
            required: false,
            default: None,
            constraints: vec![],
            update_allowed,
            immutable,
        };
        ResourceSchema {
            type_name: "T".into(),
            open_properties: false,
            properties: BTreeMap::from([
                ("size".to_string(), prop(true, false)),
                ("image".to_string(), prop(false, false)),
                ("zone".to_string(), prop(false, true)),
            ]),
            attributes: vec![],
        }
    }

    fn decide_props(old: Value, new: Value) -> Change {
        let s = schema();
        decide(
            &Existing {
                type_name: "T",
                properties: Some(&old),
            },
            "T",
            &new,
            Some(&s),
        )
    }

    #[test]
    fn decides_from_the_schema() {
        let base = json!({"size": "s", "image": "a", "zone": "z"});
        assert_eq!(decide_props(base.clone(), base.clone()), Change::Unchanged);
        assert_eq!(
            decide_props(
                base.clone(),
                json!({"size": "m", "image": "a", "zone": "z"})
            ),
            Change::Update {
                changed: vec!["size".into()]
            }
        );
        let Change::Replace { why, changed } = decide_props(
            base.clone(),
            json!({"size": "m", "image": "b", "zone": "z"}),
        ) else {
            panic!("expected a replacement");
        };
        assert_eq!(why, "property 'image' cannot change in place");
        assert_eq!(changed, ["image", "size"]);
        assert!(matches!(
            decide_props(base.clone(), json!({"size": "s", "image": "b", "zone": "y"})),
            Change::Rejected { why } if why.contains("'zone'")
        ));
        // A property that appears counts as a change from null.
        assert_eq!(
            changed_properties(&json!({"a": 1}), &json!({"a": 1, "b": null})),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_type_change_or_a_failed_create_replaces() {
        let s = schema();
        let props = json!({});
        let by_type = decide(
            &Existing {
                type_name: "Old",
                properties: Some(&props),
            },
            "T",
            &props,
            Some(&s),
        );
        assert!(matches!(by_type, Change::Replace { why, .. } if why.contains("from Old to T")));
        let failed = decide(
            &Existing {
                type_name: "T",
                properties: None,
            },
            "T",
            &props,
            Some(&s),
        );
        assert!(matches!(failed, Change::Replace { .. }));
    }
}
