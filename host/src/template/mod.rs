//! Heat Orchestration Templates (HOT): parse, validate and evaluate.
//!
//! [`validate`] reads a template, its environment files and `-P` parameter values, checks
//! everything that can be checked before any resource exists, and returns every error found
//! (each naming file, line, column and path) or a [`Stack`]. The stack is plain serde data, so
//! it can be stored as JSON and reloaded by any engine process, which later evaluates a
//! resource's [`Stack::properties`] (and the [`Stack::output`]s) with a [`Resolver`] that
//! answers `get_resource` and `get_attr` from stored resources.
//!
//! Supported: every HOT version from 2013-05-23 to 2021-04-16 and Heat's release aliases; the
//! sections `heat_template_version`, `description`, `parameter_groups`, `parameters`,
//! `resources`, `outputs`, `conditions`; the functions `get_param`, `get_resource`, `get_attr`,
//! `list_join`, `str_replace` (+ `_strict`, `_vstrict`), `str_split`, `repeat`, `map_merge`,
//! `map_replace`, `if`, `equals`, `not`, `and`, `or`, `contains`, `digest`, `list_concat`
//! (+ `_unique`), each from the version that introduced it in Heat; the pseudo parameters
//! `OS::stack_name`, `OS::stack_id`, `OS::project_id` (answered by the resolver). Rejected
//! with a clear error: `yaql`, `get_file`, `resource_facade`, `filter`, `make_url`, a
//! resource's `external_id`, nested templates and what `environment` lists.
//! Differences from Heat: condition functions (`equals`, `not`, ...) are accepted anywhere a
//! value is; `deletion_policy` also takes Heat's lowercase spellings; YAML is 1.2 (so `yes`
//! is a string — boolean properties and parameters still accept it).

mod conditions;
mod constraints;
mod environment;
mod error;
mod expr;
mod functions;
mod graph;
mod group;
mod outputs;
mod parameters;
mod redact;
mod resource_def;
mod schema;
mod validate;
mod version;
mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::config::TemplateLimits;
pub use error::{EvalError, TemplateError};
pub use expr::{At, Call, Expr};
pub use functions::Function;
pub use group::{GROUP_TYPE, PAUSE_TYPE, is_builtin};
pub use parameters::{ParamType, Parameter};
pub use redact::{MASK, Secrets};
pub use schema::{Kind, PropertySpec, ResourceSchema, TypeCatalog};
pub use validate::{validate, validate_within};
pub use version::VERSIONS;
pub use yaml::Pos;

use functions::{Fail, Scope, eval};

/// Answers what only exists once resources do.
pub trait Resolver {
    /// The physical id of a resource that is done; None when it is not (yet).
    fn physical_id(&self, resource: &str) -> Option<String>;
    /// An attribute's value (for `show`: all attributes as a map); None when it has none.
    fn attribute(&self, resource: &str, attribute: &str) -> Option<Value>;
    /// `OS::stack_name`, `OS::stack_id`, `OS::project_id`.
    fn stack_parameter(&self, _name: &str) -> Option<Value> {
        None
    }
}

/// A file's name (as shown in errors) and contents.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

impl SourceFile {
    pub fn read(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            name: path.display().to_string(),
            text: std::fs::read_to_string(path)?,
        })
    }
}

/// A validated template with its parameters' values: what the engine stores and runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    /// The template file's name, for errors found when evaluating.
    pub file: String,
    /// The canonical date of `heat_template_version`.
    pub version: String,
    pub description: String,
    pub parameters: Vec<Parameter>,
    pub conditions: BTreeMap<String, bool>,
    /// Resources whose condition holds, by name.
    pub resources: BTreeMap<String, Resource>,
    /// Resource names, every one after its dependencies (create in this order, delete in reverse).
    pub order: Vec<String>,
    pub outputs: Vec<Output>,
    /// The schema of each type used, by served type name.
    pub types: BTreeMap<String, ResourceSchema>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    /// The type as the template writes it.
    pub type_name: String,
    /// The type that serves it, after the environments' `resource_registry`.
    pub served_type: String,
    /// The resources this one needs done first (implicit and `depends_on`), sorted.
    pub depends_on: Vec<String>,
    /// Properties with everything static evaluated; see [`Stack::properties`].
    pub properties: Expr,
    pub metadata: Expr,
    pub deletion_policy: DeletionPolicy,
    pub update_policy: Value,
    /// How long each operation on it may take, polls and retries included (`timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    pub pos: Pos,
    /// Where each property is written, for errors found when evaluating.
    pub property_pos: BTreeMap<String, Pos>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
    Snapshot,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub name: String,
    pub description: String,
    /// Null when the output's condition is false.
    pub value: Expr,
    pub pos: Pos,
}

impl Stack {
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.get(name)
    }

    /// Resources in dependency order.
    pub fn in_order(&self) -> impl DoubleEndedIterator<Item = &Resource> {
        self.order.iter().map(|n| &self.resources[n])
    }

    fn scope<'a>(&'a self, params: &'a BTreeMap<String, Value>, r: &'a dyn Resolver) -> Scope<'a> {
        Scope {
            params,
            conditions: &self.conditions,
            resolver: Some(r),
        }
    }

    /// The values of its hidden parameters, to mask in whatever is said about it.
    pub fn secrets(&self) -> Secrets {
        Secrets::of(&self.parameters)
    }

    fn param_values(&self) -> BTreeMap<String, Value> {
        self.parameters
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect()
    }

    /// The properties a plugin gets for `resource`: evaluated, converted and checked against
    /// the type's schema, with defaults filled in.
    pub fn properties(&self, resource: &str, r: &dyn Resolver) -> Result<Value, EvalError> {
        self.evaluate_properties(resource, r)
            .map_err(|e| self.secrets().eval_error(e))
    }

    fn evaluate_properties(&self, resource: &str, r: &dyn Resolver) -> Result<Value, EvalError> {
        let res = self
            .resources
            .get(resource)
            .ok_or_else(|| EvalError::Unknown(format!("resource '{resource}'")))?;
        let params = self.param_values();
        let value =
            eval(&res.properties, &self.scope(&params, r)).map_err(|f| self.eval_error(f))?;
        let Some(schema) = self.types.get(&res.served_type) else {
            return Ok(value);
        };
        schema.complete(&value).map_err(|problems| {
            let errors = problems
                .into_iter()
                .map(|(name, message)| {
                    let base = format!("resources.{resource}.properties");
                    let pos = name
                        .as_ref()
                        .and_then(|n| res.property_pos.get(n))
                        .copied()
                        .unwrap_or(res.pos);
                    let path = name.map_or(base.clone(), |n| format!("{base}.{n}"));
                    error::error(&self.file, pos, &path, message)
                })
                .collect();
            EvalError::Invalid(errors)
        })
    }

    /// An output's value.
    pub fn output(&self, name: &str, r: &dyn Resolver) -> Result<Value, EvalError> {
        let out = self
            .outputs
            .iter()
            .find(|o| o.name == name)
            .ok_or_else(|| EvalError::Unknown(format!("output '{name}'")))?;
        let params = self.param_values();
        eval(&out.value, &self.scope(&params, r))
            .map_err(|f| self.secrets().eval_error(self.eval_error(f)))
    }

    fn eval_error(&self, f: Fail) -> EvalError {
        match f {
            Fail::NotReady { resource, what, at } => EvalError::NotReady {
                resource,
                what,
                location: format!("{}:{}:{}: {}", self.file, at.line, at.col, at.path),
            },
            bad => EvalError::Invalid(vec![bad.into_error(&self.file)]),
        }
    }
}
