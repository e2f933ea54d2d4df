//! The fake cloud's data: JSON objects in named collections, with `Idempotency-Key` replay.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

/// The answer to one request, before any fault that strikes after handling.
pub(crate) struct Handled {
    pub status: u16,
    pub body: Option<Value>,
    /// The id of the object this request created.
    pub created: Option<String>,
}

impl Handled {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            created: None,
        }
    }

    fn error(status: u16, message: &str) -> Self {
        Self::json(status, json!({"error": message}))
    }
}

pub(crate) struct Objects {
    next_id: u64,
    /// By number, so that listings come in creation order (`obj-2` before `obj-10`).
    items: BTreeMap<u64, Stored>,
    /// Idempotency key -> the object as the first create returned it.
    keys: HashMap<String, Value>,
    honour_keys: bool,
}

struct Stored {
    collection: String,
    value: Value,
}

fn number(id: &str) -> Option<u64> {
    id.strip_prefix("obj-")?.parse().ok()
}

impl Objects {
    pub fn new(honour_keys: bool) -> Self {
        Self {
            next_id: 0,
            items: BTreeMap::new(),
            keys: HashMap::new(),
            honour_keys,
        }
    }

    pub fn live(&self) -> usize {
        self.items.len()
    }

    pub fn get(&self, id: &str) -> Option<&Value> {
        self.items.get(&number(id)?).map(|s| &s.value)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.items.get_mut(&number(id)?).map(|s| &mut s.value)
    }

    /// Every live object, grouped by collection.
    pub fn by_collection(&self) -> BTreeMap<String, BTreeMap<String, Value>> {
        let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for (n, s) in &self.items {
            out.entry(s.collection.clone())
                .or_default()
                .insert(format!("obj-{n}"), s.value.clone());
        }
        out
    }

    /// Handles a request on `/{collection}` (`id` = None) or `/{collection}/{id}`.
    pub fn handle(
        &mut self,
        method: &str,
        collection: &str,
        id: Option<&str>,
        key: Option<&str>,
        body: &[u8],
    ) -> Handled {
        match (method, id) {
            ("POST", None) => self.create(collection, key, body),
            (_, None) => Handled::error(405, "a collection takes POST"),
            (_, Some(id)) => self.item(method, collection, id, body),
        }
    }

    fn create(&mut self, collection: &str, key: Option<&str>, body: &[u8]) -> Handled {
        let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(body) else {
            return Handled::error(400, "the body must be a JSON object");
        };
        // A repeated key returns what the first create returned and makes nothing.
        if self.honour_keys
            && let Some(first) = key.and_then(|k| self.keys.get(k))
        {
            return Handled::json(200, first.clone());
        }
        self.next_id += 1;
        let id = format!("obj-{}", self.next_id);
        obj.insert("id".into(), Value::String(id.clone()));
        let value = Value::Object(obj);
        self.items.insert(
            self.next_id,
            Stored {
                collection: collection.to_string(),
                value: value.clone(),
            },
        );
        if let Some(k) = key {
            self.keys
                .entry(k.to_string())
                .or_insert_with(|| value.clone());
        }
        Handled {
            created: Some(id),
            ..Handled::json(201, value)
        }
    }

    fn item(&mut self, method: &str, collection: &str, id: &str, body: &[u8]) -> Handled {
        let Some(n) = number(id).filter(|n| {
            self.items
                .get(n)
                .is_some_and(|s| s.collection == collection)
        }) else {
            return Handled::error(404, "no such object");
        };
        match method {
            "GET" => Handled::json(200, self.items[&n].value.clone()),
            "DELETE" => {
                self.items.remove(&n);
                Handled {
                    status: 204,
                    body: None,
                    created: None,
                }
            }
            "PUT" | "PATCH" => {
                let Ok(Value::Object(new)) = serde_json::from_slice::<Value>(body) else {
                    return Handled::error(400, "the body must be a JSON object");
                };
                let stored = &mut self.items.get_mut(&n).expect("checked above").value;
                if method == "PUT" {
                    *stored = Value::Object(new);
                } else {
                    merge_patch(stored, Value::Object(new));
                }
                // The id is the server's, whatever the body says.
                stored["id"] = Value::String(id.to_string());
                Handled::json(200, stored.clone())
            }
            _ => Handled::error(405, "an object takes GET, PUT, PATCH and DELETE"),
        }
    }
}

/// JSON merge patch (RFC 7396): objects merge recursively, `null` removes a member.
fn merge_patch(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(&k);
        } else {
            merge_patch(map.entry(k).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_merges_and_null_removes() {
        let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut v, json!({"a": null, "b": {"c": 5}, "e": 6}));
        assert_eq!(v, json!({"b": {"c": 5, "d": 3}, "e": 6}));
    }

    #[test]
    fn keys_replay_unless_ignored() {
        let mut o = Objects::new(true);
        assert_eq!(o.handle("POST", "c", None, Some("k"), b"{}").status, 201);
        let again = o.handle("POST", "c", None, Some("k"), b"{}");
        assert_eq!((again.status, again.created), (200, None));
        assert_eq!(o.live(), 1);
        let mut careless = Objects::new(false);
        careless.handle("POST", "c", None, Some("k"), b"{}");
        careless.handle("POST", "c", None, Some("k"), b"{}");
        assert_eq!(careless.live(), 2);
    }
}
