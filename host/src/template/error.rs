//! Errors of template validation and of later evaluation.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::yaml::Pos;

/// One problem in a template or environment file, at a place and a path within it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TemplateError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// Dotted path to the offending item, e.g. `resources.web.properties.flavor`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for TemplateError {}

/// Why a resource's properties or an output could not be evaluated from stored data.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A `get_resource`/`get_attr` names a resource the resolver does not know yet. The engine
    /// evaluates only after dependencies are done, so for it this is a bug.
    #[error("{location}: resource '{resource}' is not ready: {what}")]
    NotReady {
        resource: String,
        what: String,
        /// `file:line:col: path` of the function call.
        location: String,
    },
    /// The values that arrived at run time break a function's rules or the type's schema.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<TemplateError>),
    /// The stack has no such resource or output.
    #[error("the stack has no {0}")]
    Unknown(String),
}

/// Collects the errors of one file.
pub(crate) struct Errors<'a> {
    pub file: &'a str,
    pub list: &'a mut Vec<TemplateError>,
}

impl Errors<'_> {
    pub fn at(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.list.push(error(self.file, pos, path, message));
    }
}

pub(crate) fn error(file: &str, pos: Pos, path: &str, message: impl Into<String>) -> TemplateError {
    TemplateError {
        file: file.to_string(),
        line: pos.line,
        column: pos.col,
        path: path.to_string(),
        message: message.into(),
    }
}

/// `parent.child`, or `child` at the top.
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}
