//! Stack operations as a caller asks for them, with the caller's rights checked: what the
//! REST API serves and what the CLI runs in embedded mode. One implementation, so that a
//! command gives the same result whether it runs here or on a server.

mod error;
pub mod operations;
pub mod requests;
mod turns;
pub mod wire;

use serde_json::{Value, json};

pub use error::{ApiError, CODES, Location};
use requests::{
    CancelStack, CreateStack, EventPage, Graph, GraphNode, OutputValue, Preview, ShowStack,
    StatusCount, UpdateStack, ValidateTemplate, parameter_pairs,
};

use crate::config::Role;
use crate::engine::{Engine, PlannedChange, Sources, StackOptions, StoredResolver};
use crate::model::{Action, PlannedAction, Status};
use crate::plugin_set::PluginSet;
use crate::store::{ResourceRow, StackRow, Store};
use crate::template::{self, SourceFile, TemplateLimits};
use turns::{Turns, VALIDATION_WAIT};

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Who is asking: a project, and whether it may see every project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// For the logs and events.
    pub name: String,
    pub project: String,
    pub role: Role,
}

impl Caller {
    /// The embedded CLI: it has the database itself, so it sees everything; it creates in
    /// project `default`.
    pub fn local() -> Self {
        Self {
            name: format!("cli-{}", std::process::id()),
            project: "default".into(),
            role: Role::Admin,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The project a lookup is limited to (none for an admin).
    fn scope(&self) -> Option<&str> {
        (!self.is_admin()).then_some(self.project.as_str())
    }
}

/// The operations. Cheap to clone. It holds an engine to start actions with, but does not run
/// its workers: whichever engines share the database do the work.
#[derive(Clone)]
pub struct Service {
    engine: Engine,
    events_page_size: u32,
    limits: TemplateLimits,
    /// Turns to validate a template (`templates.max_concurrent` at once).
    validations: Turns,
}

/// Largest page of events a caller may ask for.
pub const MAX_EVENTS_PAGE: u32 = 1000;

impl Service {
    pub fn new(engine: Engine, events_page_size: u32, limits: TemplateLimits) -> Self {
        Self {
            engine,
            events_page_size: events_page_size.clamp(1, MAX_EVENTS_PAGE),
            validations: Turns::new(limits.concurrency(), VALIDATION_WAIT),
            limits,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn store(&self) -> &Store {
        self.engine.store()
    }

    fn plugins(&self) -> &PluginSet {
        self.engine.plugins()
    }

    /// A stack the caller may see, by name or id; another project's is not found.
    pub(crate) async fn find(&self, caller: &Caller, stack: &str) -> Result<StackRow> {
        Ok(self.store().find_stack_in(caller.scope(), stack).await?)
    }

    /// Live stacks: the caller's project's, or for an admin every project's (or `project`'s).
    pub async fn list(&self, caller: &Caller, project: Option<&str>) -> Result<Vec<wire::Stack>> {
        let scope = match (caller.scope(), project) {
            (Some(own), Some(p)) if p != own => {
                return Err(ApiError::forbidden(
                    "only an admin may list another project's stacks",
                ));
            }
            (Some(own), _) => Some(own),
            (None, p) => p,
        };
        Ok(wire::all(self.store().list_stacks_in(scope).await?))
    }

    pub async fn create(&self, caller: &Caller, req: CreateStack) -> Result<wire::Stack> {
        check_name(&req.name)?;
        let project = match req.project.as_deref() {
            Some(p) if p != caller.project && !caller.is_admin() => {
                return Err(ApiError::forbidden(
                    "only an admin may create a stack in another project",
                ));
            }
            Some(p) => p.to_string(),
            None => caller.project.clone(),
        };
        let parameters = parameter_pairs(&req.parameters);
        let stack = self
            .validate_files(&req.template, &req.environments, &parameters)
            .await?;
        let sources = Sources {
            template: req.template.name,
            template_text: req.template.text,
            environments: req
                .environments
                .into_iter()
                .map(|e| (e.name, e.text))
                .collect(),
            parameters,
            options: StackOptions {
                on_failure: req.on_failure,
                timeout_secs: req.timeout_secs.filter(|t| *t > 0),
                rollback: req.enable_rollback,
            },
        };
        Ok(self
            .engine
            .create_stack_in(&project, &req.name, &stack, &sources)
            .await?
            .into())
    }

    /// Starts an update (`PUT`; `PATCH` sets `existing`), superseding when asked.
    pub async fn update(
        &self,
        caller: &Caller,
        stack: &str,
        req: UpdateStack,
    ) -> Result<wire::Stack> {
        let row = self.find(caller, stack).await?;
        let (stack, sources) = self.update_sources(&row, &req).await?;
        let started = if req.supersede {
            self.engine
                .supersede_stack(&row.id, &stack, &sources)
                .await?
        } else {
            self.engine.update_stack(&row.id, &stack, &sources).await?
        };
        Ok(started.into())
    }

    /// What `update` would do with the same request, calling no plugin.
    pub async fn preview(&self, caller: &Caller, stack: &str, req: UpdateStack) -> Result<Preview> {
        let row = self.find(caller, stack).await?;
        let (stack, _) = self.update_sources(&row, &req).await?;
        let (row, changes) = self.engine.preview(&row.id, &stack).await?;
        let summary = summary(&changes);
        Ok(Preview {
            stack: row.name,
            changes,
            summary,
        })
    }

    pub async fn delete(&self, caller: &Caller, stack: &str) -> Result<wire::Stack> {
        let row = self.find(caller, stack).await?;
        Ok(self.engine.delete_stack(&row.id).await?.into())
    }

    pub async fn check(&self, caller: &Caller, stack: &str) -> Result<wire::Stack> {
        let row = self.find(caller, stack).await?;
        Ok(self.engine.check_stack(&row.id).await?.into())
    }

    pub async fn resume(&self, caller: &Caller, stack: &str) -> Result<wire::Stack> {
        let row = self.find(caller, stack).await?;
        Ok(self.engine.resume_stack(&row.id).await?.into())
    }

    pub async fn cancel(
        &self,
        caller: &Caller,
        stack: &str,
        req: CancelStack,
    ) -> Result<wire::Stack> {
        let row = self.find(caller, stack).await?;
        let rollback = req.rollback.unwrap_or(true);
        Ok(self
            .store()
            .cancel(&row.id, &caller.name, rollback)
            .await?
            .into())
    }

    /// Status, resource counts, what is being worked on, and (unless left out) the outputs.
    pub async fn show(&self, caller: &Caller, stack: &str, outputs: bool) -> Result<ShowStack> {
        let row = self.find(caller, stack).await?;
        let store = self.store();
        let resources = store
            .resource_counts(&row.id)
            .await?
            .into_iter()
            .map(|(a, s, count)| StatusCount {
                status: format!("{a}_{s}"),
                count,
            })
            .collect();
        let in_progress = if row.status == Status::InProgress {
            store.resources_in_progress(&row.id, 3).await?
        } else {
            Vec::new()
        };
        let outputs = if outputs {
            Some(self.outputs_of(&row).await?)
        } else {
            None
        };
        Ok(ShowStack {
            stack: row.into(),
            resources,
            in_progress,
            outputs,
        })
    }

    pub async fn outputs(&self, caller: &Caller, stack: &str) -> Result<Vec<OutputValue>> {
        let row = self.find(caller, stack).await?;
        self.outputs_of(&row).await
    }

    pub async fn resources(&self, caller: &Caller, stack: &str) -> Result<Vec<wire::Resource>> {
        let row = self.find(caller, stack).await?;
        Ok(wire::all(self.store().resources(&row.id).await?))
    }

    pub async fn resource(
        &self,
        caller: &Caller,
        stack: &str,
        name: &str,
    ) -> Result<wire::Resource> {
        let row = self.find(caller, stack).await?;
        self.store()
            .resources_named(&row.id, &[name])
            .await?
            .into_iter()
            .next()
            .map(wire::Resource::from)
            .ok_or_else(|| {
                ApiError::not_found(format!("stack '{}' has no resource '{name}'", row.name))
            })
    }

    /// A page of events after `after` (an event id), oldest first.
    pub async fn events(
        &self,
        caller: &Caller,
        stack: &str,
        after: i64,
        limit: Option<u32>,
    ) -> Result<EventPage> {
        let row = self.find(caller, stack).await?;
        let limit = limit
            .unwrap_or(self.events_page_size)
            .clamp(1, MAX_EVENTS_PAGE);
        let events = self
            .store()
            .events_page(&row.id, after, limit as i64)
            .await?;
        let next = (events.len() == limit as usize)
            .then(|| events.last().map(|e| e.id))
            .flatten();
        Ok(EventPage {
            events: wire::all(events),
            next,
        })
    }

    /// The stack's resources with their dependencies and states, for drawing.
    pub async fn graph(&self, caller: &Caller, stack: &str) -> Result<Graph> {
        let row = self.find(caller, stack).await?;
        let stack = self.stored_template(&row).await?;
        let rows = self.store().resources(&row.id).await?;
        let by_name: std::collections::HashMap<&str, &ResourceRow> =
            rows.iter().map(|r| (r.name.as_str(), r)).collect();
        let node = |name: &str, type_name: &str, depends_on: Vec<String>| {
            let r = by_name.get(name);
            GraphNode {
                name: name.to_string(),
                type_name: type_name.to_string(),
                action: r.map_or(Action::Init, |r| r.action),
                status: r.map_or(Status::Complete, |r| r.status),
                status_reason: r.map_or(String::new(), |r| r.status_reason.clone()),
                depends_on,
            }
        };
        let mut nodes: Vec<GraphNode> = stack
            .in_order()
            .map(|r| node(&r.name, &r.type_name, r.depends_on.clone()))
            .collect();
        // Rows the template no longer has (removed, or replaced objects awaiting deletion),
        // with the dependencies they were applied with.
        for r in rows
            .iter()
            .filter(|r| !stack.resources.contains_key(&r.name))
        {
            let requires: Vec<String> = r
                .requires
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_default();
            nodes.push(node(&r.name, &r.type_name, requires));
        }
        Ok(Graph {
            stack: row.into(),
            nodes,
        })
    }

    /// Checks a template with its environments and parameters; the summary `kiln validate`
    /// prints as JSON.
    pub async fn validate(&self, req: &ValidateTemplate) -> Result<Value> {
        let parameters = parameter_pairs(&req.parameters);
        let stack = self
            .validate_files(&req.template, &req.environments, &parameters)
            .await?;
        Ok(validation_summary(&stack))
    }

    /// Every resource type the plugins serve, with its property and attribute schema.
    pub fn resource_types(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for plugin in self.plugins().plugins() {
            let Some(info) = plugin.info() else { continue };
            for t in &info.types {
                let mut doc = serde_json::to_value(t).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut doc {
                    map.insert("plugin".into(), json!(plugin.name()));
                    map.insert("version".into(), json!(info.version));
                    for p in map
                        .get_mut("properties")
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        plain_property_type(p);
                    }
                }
                out.push(doc);
            }
        }
        out
    }

    /// The engines sharing the database: for an admin only.
    pub async fn engines(&self, caller: &Caller) -> Result<Vec<wire::Engine>> {
        if !caller.is_admin() {
            return Err(ApiError::forbidden("only an admin may list the engines"));
        }
        Ok(wire::all(self.store().engine_list().await?))
    }

    /// Validates within `[templates]`, at most `max_concurrent` at once, each on a blocking
    /// thread so that the async threads stay free to answer.
    async fn validate_files(
        &self,
        template: &SourceFile,
        environments: &[SourceFile],
        parameters: &[(String, String)],
    ) -> Result<template::Stack> {
        let turn = self.validations.take().await?;
        let (engine, limits) = (self.engine.clone(), self.limits);
        let (template, environments, parameters) =
            (template.clone(), environments.to_vec(), parameters.to_vec());
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            template::validate_within(
                &template,
                &environments,
                &parameters,
                engine.plugins(),
                &limits,
            )
            .map_err(|errors| ApiError::invalid_template(&template.name, errors))
        })
        .await
        .map_err(|e| ApiError::internal(format!("validating the template: {e}")))?
    }

    /// The stack's new definition: the files given, or with `existing` what it was made
    /// from, with the files and parameters given replacing (parameters: patching) the stored
    /// ones.
    async fn update_sources(
        &self,
        row: &StackRow,
        req: &UpdateStack,
    ) -> Result<(template::Stack, Sources)> {
        let current = self.engine.sources(row).await?;
        let mut options = current.options.clone();
        if let Some(on_failure) = req.on_failure {
            options.on_failure = on_failure;
        }
        if let Some(timeout) = req.timeout_secs {
            options.timeout_secs = (timeout > 0).then_some(timeout);
        }
        if let Some(rollback) = req.rollback {
            options.rollback = rollback;
        }
        let stored = req.existing.then_some(current);
        let file = match (&req.template, &stored) {
            (Some(file), _) => file.clone(),
            (None, Some(s)) => SourceFile {
                name: s.template.clone(),
                text: s.template_text.clone(),
            },
            (None, None) => {
                return Err(ApiError::new(
                    "invalid_body",
                    "a template is required unless `existing` is set",
                )
                .with_location(Location {
                    path: Some("template".into()),
                    ..Location::default()
                }));
            }
        };
        let environments: Vec<SourceFile> = match (&req.environments, &stored) {
            (Some(given), _) => given.clone(),
            (None, Some(s)) => s
                .environments
                .iter()
                .map(|(name, text)| SourceFile {
                    name: name.clone(),
                    text: text.clone(),
                })
                .collect(),
            (None, None) => Vec::new(),
        };
        let mut parameters = stored.map(|s| s.parameters).unwrap_or_default();
        for (k, v) in parameter_pairs(&req.parameters) {
            parameters.retain(|(old, _)| *old != k);
            parameters.push((k, v));
        }
        let stack = self
            .validate_files(&file, &environments, &parameters)
            .await?;
        let sources = Sources {
            template: file.name,
            template_text: file.text,
            environments: environments.into_iter().map(|e| (e.name, e.text)).collect(),
            parameters,
            options,
        };
        Ok((stack, sources))
    }

    async fn stored_template(&self, row: &StackRow) -> Result<template::Stack> {
        let text = self.store().stack_template(&row.id).await?;
        serde_json::from_str(&text)
            .map_err(|e| ApiError::internal(format!("stored template is corrupt: {e}")))
    }

    async fn outputs_of(&self, row: &StackRow) -> Result<Vec<OutputValue>> {
        let stack = self.stored_template(row).await?;
        let rows = self.store().resources(&row.id).await?;
        let resolver = StoredResolver::new(rows, &row.name, &row.id);
        Ok(stack
            .outputs
            .iter()
            .map(|o| {
                let (value, error) = match stack.output(&o.name, &resolver) {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                OutputValue {
                    name: o.name.clone(),
                    description: o.description.clone(),
                    value,
                    error,
                }
            })
            .collect())
    }
}

/// A property schema as the bindings serialise it names its type `type_` with the WIT case
/// (`Integer`); the API says `type`, in lower case (`integer`), as Heat does.
fn plain_property_type(property: &mut Value) {
    if let Some(map) = property.as_object_mut()
        && let Some(t) = map.remove("type_")
    {
        let t = t
            .as_str()
            .map_or(t.clone(), |s| json!(s.to_ascii_lowercase()));
        map.insert("type".into(), t);
    }
}

/// Heat's rule for stack names: a letter first, then letters, digits, `_`, `-` and `.`.
fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        return Ok(());
    }
    Err(ApiError::new(
        "invalid_body",
        format!(
            "invalid stack name '{name}': it must start with a letter and have only letters, \
             digits, '_', '-' and '.' (at most 255)"
        ),
    )
    .with_location(Location {
        path: Some("name".into()),
        ..Location::default()
    }))
}

/// The preview's closing line.
pub fn summary(changes: &[PlannedChange]) -> String {
    let count = |a: PlannedAction| changes.iter().filter(|c| c.action == a).count();
    format!(
        "{} to create, {} to update in place, {} to replace, {} to delete, {} unchanged{}",
        count(PlannedAction::Create),
        count(PlannedAction::Update),
        count(PlannedAction::Replace),
        count(PlannedAction::Delete),
        count(PlannedAction::Unchanged),
        match count(PlannedAction::Rejected) {
            0 => String::new(),
            n => format!(", {n} rejected (the update would fail)"),
        }
    )
}

/// What a valid template declares, as `kiln validate --format json` prints it.
pub fn validation_summary(stack: &template::Stack) -> Value {
    json!({
        "valid": true,
        "template": stack.file,
        "heat_template_version": stack.version,
        "description": stack.description,
        "parameters": stack.parameters.iter().map(|p| json!({"name": p.name, "type": p.kind.name(), "value": if p.hidden { json!("******") } else { p.value.clone() }})).collect::<Vec<_>>(),
        "resources": stack.in_order().map(|r| json!({"name": r.name, "type": r.type_name, "served_type": r.served_type, "depends_on": r.depends_on})).collect::<Vec<_>>(),
        "outputs": stack.outputs.iter().map(|o| json!({"name": o.name, "description": o.description})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn stack_names_follow_heat() {
        for ok in ["web", "a", "web-1.prod_2"] {
            assert!(super::check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1web", "web/1", "we b", "-x"] {
            let e = super::check_name(bad).unwrap_err();
            assert_eq!(e.code, "invalid_body", "{bad}");
        }
    }
}
