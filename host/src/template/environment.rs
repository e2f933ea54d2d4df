//! Environment files (`-e`): `parameters`, `parameter_defaults` and `resource_registry`, merged
//! in order (a later file overrides an earlier one).
//!
//! Supported on purpose, and only: type aliases (`"OS::Nova::Server": "Kiln::HTTP::Resource"`)
//! and prefix globs (`"OS::Custom::*": "Kiln::*"`). Nested templates, per-resource registry
//! entries, `event_sinks` and `parameter_merge_strategies` are rejected as unsupported;
//! `encrypted_param_names` (which Heat writes for itself) is ignored.

use std::collections::BTreeMap;

use super::SourceFile;
use super::error::{Errors, TemplateError, join};
use super::parameters::Supplied;
use super::yaml::{self, Node, Yaml};
use crate::config::TemplateLimits;

#[derive(Default)]
pub(crate) struct Environment {
    pub parameters: BTreeMap<String, Supplied>,
    pub parameter_defaults: BTreeMap<String, Supplied>,
    /// Type name or `Prefix::*` -> type name or `Prefix::*`.
    registry: BTreeMap<String, String>,
}

const SECTIONS: [&str; 6] = [
    "parameters",
    "parameter_defaults",
    "resource_registry",
    "encrypted_param_names",
    "event_sinks",
    "parameter_merge_strategies",
];

impl Environment {
    pub fn load(
        files: &[SourceFile],
        limits: &TemplateLimits,
        list: &mut Vec<TemplateError>,
    ) -> Self {
        let mut env = Environment::default();
        for file in files {
            let mut errors = Errors {
                file: &file.name,
                list,
            };
            match yaml::parse(&file.text, limits) {
                Ok(doc) => env.merge(&doc, &mut errors),
                Err(es) => es.into_iter().for_each(|e| errors.at(e.pos, "", e.message)),
            }
        }
        env
    }

    fn merge(&mut self, doc: &Node, errors: &mut Errors) {
        if !doc.is_null() && !matches!(doc.value, Yaml::Map(_)) {
            errors.at(
                doc.pos,
                "",
                format!("an environment must be a mapping, got {}", doc.kind()),
            );
        }
        for (key, section) in doc.entries() {
            match key.name.as_str() {
                "parameters" => values(section, "parameters", &mut self.parameters, errors),
                "parameter_defaults" => values(
                    section,
                    "parameter_defaults",
                    &mut self.parameter_defaults,
                    errors,
                ),
                "resource_registry" => self.registry(section, errors),
                "encrypted_param_names" => {}
                "event_sinks" | "parameter_merge_strategies" => {
                    errors.at(key.pos, &key.name, "not supported by Kiln")
                }
                other => errors.at(
                    key.pos,
                    other,
                    format!("unknown section (sections: {})", SECTIONS.join(", ")),
                ),
            }
        }
    }

    fn registry(&mut self, section: &Node, errors: &mut Errors) {
        for (key, target) in section.entries() {
            let path = join("resource_registry", &key.name);
            if key.name == "resources" || key.name == "base_url" {
                errors.at(
                    key.pos,
                    &path,
                    "per-resource registry entries and base_url are not supported by Kiln",
                );
                continue;
            }
            match target.as_str() {
                Some(t) if t.ends_with(".yaml") || t.ends_with(".template") || t.contains('/') => {
                    errors.at(
                        target.pos,
                        &path,
                        format!("nested templates ('{t}') are not supported by Kiln"),
                    )
                }
                Some(t) if key.name.ends_with('*') != t.ends_with('*') => errors.at(
                    target.pos,
                    &path,
                    "a glob maps to a glob: 'Prefix::*': 'Other::*'",
                ),
                Some(t) => {
                    self.registry.insert(key.name.clone(), t.to_string());
                }
                None => errors.at(
                    target.pos,
                    &path,
                    format!("expected a type name, got {}", target.kind()),
                ),
            }
        }
    }

    /// The type a template's type name stands for: an exact entry first, else the longest
    /// matching glob, else the name itself.
    pub fn map_type(&self, name: &str) -> String {
        if let Some(t) = self.registry.get(name) {
            return t.clone();
        }
        self.registry
            .iter()
            .filter_map(|(k, t)| Some((k.strip_suffix('*')?, t.strip_suffix('*')?)))
            .filter(|(prefix, _)| name.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or_else(
                || name.to_string(),
                |(prefix, target)| format!("{target}{}", &name[prefix.len()..]),
            )
    }
}

fn values(
    section: &Node,
    source: &'static str,
    into: &mut BTreeMap<String, Supplied>,
    errors: &mut Errors,
) {
    if !section.is_null() && !matches!(section.value, Yaml::Map(_)) {
        errors.at(
            section.pos,
            source,
            format!("expected a mapping, got {}", section.kind()),
        );
    }
    for (key, value) in section.entries() {
        into.insert(
            key.name.clone(),
            Supplied {
                value: value.to_json(),
                file: errors.file.to_string(),
                pos: value.pos,
                source,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str) -> (Environment, Vec<TemplateError>) {
        let mut errors = Vec::new();
        let files = [SourceFile {
            name: "env.yaml".into(),
            text: text.into(),
        }];
        (
            Environment::load(&files, &TemplateLimits::default(), &mut errors),
            errors,
        )
    }

    #[test]
    fn aliases_and_globs() {
        let (e, errors) = env(
            "resource_registry:\n  OS::Nova::Server: Kiln::HTTP::Resource\n  OS::Test::*: OS::Heat::*\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(e.map_type("OS::Nova::Server"), "Kiln::HTTP::Resource");
        assert_eq!(e.map_type("OS::Test::None"), "OS::Heat::None");
        assert_eq!(e.map_type("OS::Heat::None"), "OS::Heat::None");
    }

    #[test]
    fn unsupported_parts_are_errors() {
        let (_, errors) = env(
            "resource_registry:\n  My::Server: server.yaml\n  resources: {}\nevent_sinks: []\nbogus: 1\n",
        );
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "env.yaml:2:15: resource_registry.My::Server: nested templates ('server.yaml') are not supported by Kiln",
                "env.yaml:3:3: resource_registry.resources: per-resource registry entries and base_url are not supported by Kiln",
                "env.yaml:4:1: event_sinks: not supported by Kiln",
                "env.yaml:5:1: bogus: unknown section (sections: parameters, parameter_defaults, resource_registry, encrypted_param_names, event_sinks, parameter_merge_strategies)",
            ]
        );
    }
}
