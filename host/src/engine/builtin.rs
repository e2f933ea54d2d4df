//! The types the engine serves itself, with no plugin: a group's own node (its attributes
//! gather its members') and the pause between a group's batches (a durable timer: the job
//! comes back when the pause is over, holding no worker meanwhile).

use serde_json::{Map, Value, json};

use crate::runtime::{Done, Outcome, Pending};
use crate::template::{GROUP_TYPE, PAUSE_TYPE};

pub(super) use crate::template::is_builtin;

/// The outcome of creating or updating a built-in resource (`polling`: its pause is over).
pub(super) fn apply(
    stack_id: &str,
    resource: &str,
    type_name: &str,
    props: &Value,
    polling: bool,
) -> Outcome {
    let physical_id = format!("{stack_id}/{resource}");
    match type_name {
        GROUP_TYPE => Outcome::Done(Done {
            physical_id,
            state: json!({}),
            attributes: group_attributes(props),
        }),
        PAUSE_TYPE => {
            let secs = props.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
            if polling || secs <= 0.0 {
                Outcome::Done(Done {
                    physical_id,
                    state: json!({}),
                    attributes: Map::new(),
                })
            } else {
                Outcome::Pending(Pending {
                    state: json!({"pause_secs": secs}),
                    poll_after_ms: (secs * 1000.0).round() as u64,
                })
            }
        }
        other => unreachable!("{other} is not built in"),
    }
}

/// `refs` (member ids in index order), `refs_map` (index -> id) and, for each attribute the
/// members have, the list of its values.
fn group_attributes(props: &Value) -> Map<String, Value> {
    let members = props
        .get("members")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut refs = Vec::new();
    let mut refs_map = Map::new();
    let mut names: Vec<String> = Vec::new();
    for m in &members {
        let id = m.get("id").cloned().unwrap_or(Value::Null);
        let index = m
            .get("name")
            .and_then(Value::as_str)
            .and_then(|n| n.rsplit_once('[')?.1.strip_suffix(']').map(String::from))
            .unwrap_or_default();
        refs.push(id.clone());
        refs_map.insert(index, id);
        if let Some(attrs) = m.get("attributes").and_then(Value::as_object) {
            for k in attrs.keys() {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
    }
    let mut out = Map::new();
    for name in names {
        let values = members
            .iter()
            .map(|m| {
                m.pointer(&format!("/attributes/{name}"))
                    .cloned()
                    .unwrap_or(Value::Null)
            })
            .collect();
        out.insert(name, Value::Array(values));
    }
    out.insert("refs".into(), Value::Array(refs));
    out.insert("refs_map".into(), Value::Object(refs_map));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_gathers_its_members() {
        let props = json!({"members": [
            {"name": "web[0]", "id": "a", "attributes": {"output": "x"}},
            {"name": "web[2]", "id": "b", "attributes": {"output": "y", "extra": 1}},
        ]});
        let attrs = group_attributes(&props);
        assert_eq!(attrs["refs"], json!(["a", "b"]));
        assert_eq!(attrs["refs_map"], json!({"0": "a", "2": "b"}));
        assert_eq!(attrs["output"], json!(["x", "y"]));
        assert_eq!(attrs["extra"], json!([null, 1]));
    }

    #[test]
    fn a_pause_waits_once() {
        let props = json!({"seconds": 2.5});
        let Outcome::Pending(p) = apply("s", "g[pause-1]", PAUSE_TYPE, &props, false) else {
            panic!("a pause waits");
        };
        assert_eq!(p.poll_after_ms, 2500);
        assert!(matches!(
            apply("s", "g[pause-1]", PAUSE_TYPE, &props, true),
            Outcome::Done(_)
        ));
    }
}
