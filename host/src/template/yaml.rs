//! YAML (and therefore JSON) documents as trees whose every node and key knows its line and
//! column, so that any later error can point at the exact place in the file.
//!
//! Built from saphyr-parser's events rather than a ready-made DOM because we need positions on
//! keys too, a duplicate key to be an error (most loaders keep the last one silently), and the
//! YAML 1.2 core schema for plain scalars (so `2016-10-14` stays a string, as Heat wants).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::TemplateLimits;

/// A place in a file: 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    fn of(span: Span) -> Self {
        Self {
            line: span.start.line() as u32,
            col: span.start.col() as u32 + 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Yaml {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Yaml,
}

impl Node {
    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// The entries of a mapping; empty for anything else.
    pub fn entries(&self) -> &[(Key, Node)] {
        match &self.value {
            Yaml::Map(m) => m,
            _ => &[],
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.value == Yaml::Null
    }

    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Yaml::Null => "null",
            Yaml::Bool(_) => "a boolean",
            Yaml::Int(_) | Yaml::Float(_) => "a number",
            Yaml::Str(_) => "a string",
            Yaml::Seq(_) => "a list",
            Yaml::Map(_) => "a mapping",
        }
    }

    pub fn to_json(&self) -> Value {
        match &self.value {
            Yaml::Null => Value::Null,
            Yaml::Bool(b) => Value::Bool(*b),
            Yaml::Int(i) => Value::from(*i),
            Yaml::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Yaml::Str(s) => Value::String(s.clone()),
            Yaml::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Yaml::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A parse problem at a place in the text.
#[derive(Debug, PartialEq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one document. An empty document is a null node. Duplicate keys are reported all
/// together; a syntax error, or going past one of `limits`, stops the parse.
pub fn parse(text: &str, limits: &TemplateLimits) -> Result<Node, Vec<YamlError>> {
    if text.len() as u64 > limits.max_bytes {
        return Err(vec![YamlError {
            pos: Pos { line: 1, col: 1 },
            message: format!(
                "the file is {} bytes, more than templates.max_bytes ({})",
                text.len(),
                limits.max_bytes
            ),
        }]);
    }
    let mut builder = Builder {
        limits: *limits,
        ..Builder::default()
    };
    let mut documents = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            // The parser has a nesting bound of its own for flow collections (`[[[...`),
            // which it may reach before ours: the same limit, said the same way.
            let message = match e.info() {
                "recursion limit exceeded" => too_deep(limits),
                info => info.to_string(),
            };
            vec![YamlError {
                pos: Pos {
                    line: e.marker().line() as u32,
                    col: e.marker().col() as u32 + 1,
                },
                message,
            }]
        })?;
        if let Event::DocumentStart(_) = event {
            documents += 1;
            if documents > 1 {
                return Err(vec![YamlError {
                    pos: Pos::of(span),
                    message: "only one YAML document is allowed per file".into(),
                }]);
            }
        }
        builder.event(event, span);
        if let Some(e) = builder.over_limit.take() {
            return Err(vec![e]);
        }
    }
    if !builder.errors.is_empty() {
        return Err(builder.errors);
    }
    Ok(builder.root.unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        value: Yaml::Null,
    }))
}

fn too_deep(limits: &TemplateLimits) -> String {
    format!(
        "lists and mappings nest deeper than templates.max_depth ({})",
        limits.max_depth
    )
}

/// Collections being built, innermost last, with the node count when each started. A mapping
/// keeps its pending key.
enum Open {
    Seq(Node, usize, usize),
    Map(Node, usize, Option<Key>, usize),
}

#[derive(Default)]
struct Builder {
    limits: TemplateLimits,
    stack: Vec<Open>,
    /// Anchored nodes and how many nodes each is.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes built so far, aliases counted at their expanded size.
    nodes: usize,
    /// Nodes copied by aliases so far.
    alias_nodes: usize,
    root: Option<Node>,
    errors: Vec<YamlError>,
    /// Set when the document went past a limit: the parse stops there.
    over_limit: Option<YamlError>,
}

impl Builder {
    fn event(&mut self, event: Event, span: Span) {
        let pos = Pos::of(span);
        if matches!(event, Event::SequenceStart(..) | Event::MappingStart(..))
            && self.stack.len() >= self.limits.max_depth as usize
        {
            self.stop(pos, too_deep(&self.limits));
            return;
        }
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if style == ScalarStyle::Plain && !is_str_tag {
                    plain(&text)
                } else {
                    Yaml::Str(text.into_owned())
                };
                self.nodes += 1;
                if !self.over_nodes(pos) {
                    self.finish(Node { pos, value }, anchor, 1);
                }
            }
            Event::SequenceStart(anchor, _) => {
                self.nodes += 1;
                let node = Node {
                    pos,
                    value: Yaml::Seq(Vec::new()),
                };
                self.stack.push(Open::Seq(node, anchor, self.nodes));
            }
            Event::MappingStart(anchor, _) => {
                self.nodes += 1;
                let node = Node {
                    pos,
                    value: Yaml::Map(Vec::new()),
                };
                self.stack.push(Open::Map(node, anchor, None, self.nodes));
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Open::Seq(node, anchor, start)) | Some(Open::Map(node, anchor, _, start)) => {
                    let size = self.nodes - start + 1;
                    self.finish(node, anchor, size)
                }
                None => {}
            },
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((_, size)) => {
                    // Counted before anything is copied: past a bound nothing is.
                    let size = *size;
                    self.nodes += size;
                    self.alias_nodes += size;
                    if self.alias_nodes as u64 > self.limits.max_alias_nodes {
                        let max = self.limits.max_alias_nodes;
                        self.stop(
                            pos,
                            format!(
                                "aliases copy more than templates.max_alias_nodes ({max}) \
                                 nodes (aliases of aliases?)"
                            ),
                        );
                    } else if !self.over_nodes(pos) {
                        let node = self.anchors[&id].0.clone();
                        self.finish(node, 0, size);
                    }
                }
                None => self.errors.push(YamlError {
                    pos,
                    message: "alias to an unknown anchor".into(),
                }),
            },
            _ => {}
        }
    }

    /// Stops the parse with `message` (the first limit passed is the one reported).
    fn stop(&mut self, pos: Pos, message: String) {
        self.over_limit.get_or_insert(YamlError { pos, message });
    }

    /// Whether the document has grown past `max_nodes` (then the parse stops).
    fn over_nodes(&mut self, pos: Pos) -> bool {
        if self.nodes as u64 <= self.limits.max_nodes {
            return false;
        }
        let max = self.limits.max_nodes;
        self.stop(
            pos,
            format!("the document has more than templates.max_nodes ({max}) nodes"),
        );
        true
    }

    /// Places a complete node of `size` nodes into its parent (or as the root).
    fn finish(&mut self, node: Node, anchor: usize, size: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq(seq, _, _)) => {
                if let Yaml::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Open::Map(map, _, pending, _)) => match pending.take() {
                None => {
                    let name = match node.value {
                        Yaml::Str(s) => s,
                        Yaml::Null => "null".into(),
                        Yaml::Bool(b) => b.to_string(),
                        Yaml::Int(i) => i.to_string(),
                        Yaml::Float(f) => f.to_string(),
                        Yaml::Seq(_) | Yaml::Map(_) => {
                            self.errors.push(YamlError {
                                pos: node.pos,
                                message: "a mapping key must be a scalar".into(),
                            });
                            String::new()
                        }
                    };
                    *pending = Some(Key {
                        name,
                        pos: node.pos,
                    });
                }
                Some(key) => {
                    if let Yaml::Map(entries) = &mut map.value {
                        if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == key.name) {
                            self.errors.push(YamlError {
                                pos: key.pos,
                                message: format!(
                                    "duplicate key '{}' (first at line {})",
                                    key.name, first.pos.line
                                ),
                            });
                        } else {
                            entries.push((key, node));
                        }
                    }
                }
            },
        }
    }
}

/// The YAML 1.2 core schema for plain scalars.
fn plain(text: &str) -> Yaml {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Yaml::Null,
        "true" | "True" | "TRUE" => return Yaml::Bool(true),
        "false" | "False" | "FALSE" => return Yaml::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i64>()
    {
        return Yaml::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Yaml::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Yaml::Int(i);
    }
    // Rust's float syntax is wider than YAML's (it takes "inf", "nan"): require a digit and
    // only characters a YAML float can have.
    if digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && let Ok(f) = text.parse::<f64>()
    {
        return Yaml::Float(f);
    }
    Yaml::Str(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Node, Vec<YamlError>> {
        super::parse(text, &TemplateLimits::default())
    }

    #[test]
    fn positions_of_keys_and_values() {
        let doc = parse("a: 1\nb:\n  c: [x, 2.5]\n").unwrap();
        let b = doc.get("b").unwrap();
        assert_eq!(doc.entries()[1].0.pos, Pos { line: 2, col: 1 });
        let c = b.get("c").unwrap();
        assert_eq!(c.pos.line, 3);
        assert_eq!(c.to_json(), serde_json::json!(["x", 2.5]));
    }

    #[test]
    fn core_schema_scalars() {
        let doc = parse("v: 2016-10-14\nn: 12\nq: '12'\nb: yes\nt: True\nz: ~\nf: 1e3\n").unwrap();
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"v": "2016-10-14", "n": 12, "q": "12", "b": "yes", "t": true, "z": null, "f": 1000.0})
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err[0].pos, Pos { line: 3, col: 1 });
        assert_eq!(err[0].message, "duplicate key 'a' (first at line 1)");
    }

    #[test]
    fn json_is_yaml() {
        let doc = parse(r#"{"a": {"b": [1, "x"]}}"#).unwrap();
        assert_eq!(doc.to_json(), serde_json::json!({"a": {"b": [1, "x"]}}));
    }

    #[test]
    fn alias_bombs_are_stopped() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text += &format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            );
        }
        let errors = parse(&text).unwrap_err();
        assert!(
            errors[0]
                .message
                .contains("more than templates.max_alias_nodes (100000)"),
            "{:?}",
            errors[0]
        );
        // Without the alias bound, the bound on all nodes stops it.
        let limits = TemplateLimits {
            max_alias_nodes: u64::MAX,
            ..TemplateLimits::default()
        };
        let errors = super::parse(&text, &limits).unwrap_err();
        assert!(
            errors[0]
                .message
                .contains("more than templates.max_nodes (2000000) nodes"),
            "{:?}",
            errors[0]
        );
    }

    #[test]
    fn deep_nesting_and_large_files_are_refused() {
        let deep = format!("a: {}{}", "[".repeat(65), "]".repeat(65));
        let errors = parse(&deep).unwrap_err();
        assert_eq!(
            errors[0].message,
            "lists and mappings nest deeper than templates.max_depth (64)"
        );
        assert!(parse(&format!("a: {}{}", "[".repeat(62), "]".repeat(62))).is_ok());
        let limits = TemplateLimits {
            max_bytes: 10,
            ..TemplateLimits::default()
        };
        let errors = super::parse("a: 12345678901", &limits).unwrap_err();
        assert_eq!(
            errors[0].message,
            "the file is 14 bytes, more than templates.max_bytes (10)"
        );
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let doc = parse("a: &x {k: v}\nb: *x\n").unwrap();
        assert_eq!(
            doc.get("b").unwrap().to_json(),
            serde_json::json!({"k": "v"})
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse("a: [1, 2\n").unwrap_err();
        assert!(err[0].pos.line >= 1, "{err:?}");
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }
}
