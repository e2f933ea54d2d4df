//! Reading what engines wrote: stacks by name or id (within a project), their templates and
//! sources, resources and events. Nothing here writes.

use sqlx::AssertSqlSafe;

use super::rows::{CHUNK, STACK_COLUMNS, event_row, resource_row, stack_row};
use super::{EventRow, ResourceRow, Result, StackRow, Store, StoreError};
impl Store {
    pub(super) async fn stack_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        id: &str,
    ) -> Result<StackRow> {
        let q = AssertSqlSafe(format!("SELECT {STACK_COLUMNS} FROM stacks WHERE id = $1"));
        let row = sqlx::query(q).bind(id).fetch_one(&mut **tx).await?;
        stack_row(&row)
    }

    /// A live stack by name or id (a deleted one only by id), in any project.
    pub async fn find_stack(&self, name_or_id: &str) -> Result<StackRow> {
        self.find_stack_in(None, name_or_id).await
    }

    /// A live stack by name or id (a deleted one only by id), within `project` if given. One
    /// of another project is not found, exactly as a missing one (its existence is not
    /// leaked); a name live in several projects, looked up across projects, is ambiguous.
    pub async fn find_stack_in(&self, project: Option<&str>, name_or_id: &str) -> Result<StackRow> {
        let q = AssertSqlSafe(format!(
            "SELECT {STACK_COLUMNS} FROM stacks
             WHERE ((name = $1 AND deleted_at IS NULL) OR id = $1) AND (project = $2 OR $3 = 1)
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 3"
        ));
        let rows = sqlx::query(q)
            .bind(name_or_id)
            .bind(project.unwrap_or(""))
            .bind(project.is_none() as i64)
            .fetch_all(&self.pool)
            .await?;
        let rows: Vec<StackRow> = rows.iter().map(stack_row).collect::<Result<_>>()?;
        match rows.as_slice() {
            [] => Err(StoreError::StackNotFound(name_or_id.to_string())),
            [first, ..] if first.id == name_or_id => Ok(first.clone()),
            [only] => Ok(only.clone()),
            many => Err(StoreError::Ambiguous {
                name: name_or_id.to_string(),
                projects: many.iter().map(|r| r.project.clone()).collect(),
            }),
        }
    }

    /// The validated template (JSON) of a stack, as engines evaluate it.
    pub async fn stack_template(&self, stack_id: &str) -> Result<String> {
        let (t,): (String,) = sqlx::query_as("SELECT template FROM stacks WHERE id = $1")
            .bind(stack_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(t)
    }

    /// Live stacks, oldest first: all, or one project's.
    pub async fn list_stacks(&self) -> Result<Vec<StackRow>> {
        self.list_stacks_in(None).await
    }

    pub async fn list_stacks_in(&self, project: Option<&str>) -> Result<Vec<StackRow>> {
        let q = AssertSqlSafe(format!(
            "SELECT {STACK_COLUMNS} FROM stacks WHERE deleted_at IS NULL AND (project = $1 OR $2 = 1)
             ORDER BY created_at, name"
        ));
        sqlx::query(q)
            .bind(project.unwrap_or(""))
            .bind(project.is_none() as i64)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(stack_row)
            .collect()
    }

    pub async fn resources(&self, stack_id: &str) -> Result<Vec<ResourceRow>> {
        let rows = sqlx::query(
            "SELECT name, type, action, status, status_reason, physical_id, state, attributes, updated_at, properties,
                    requires, deletion_policy, traversal
             FROM resources WHERE stack_id = $1 ORDER BY name",
        )
        .bind(stack_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(resource_row).collect()
    }

    /// Some resources of a stack (the dependencies a job needs to resolve its properties).
    pub async fn resources_named(
        &self,
        stack_id: &str,
        names: &[&str],
    ) -> Result<Vec<ResourceRow>> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(CHUNK) {
            let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let q = AssertSqlSafe(format!(
                "SELECT name, type, action, status, status_reason, physical_id, state, attributes, updated_at, properties,
                        requires, deletion_policy, traversal
                 FROM resources WHERE stack_id = $1 AND name IN ({})",
                list.join(", ")
            ));
            let mut query = sqlx::query(q).bind(stack_id);
            for n in chunk {
                query = query.bind(*n);
            }
            for row in query.fetch_all(&self.pool).await? {
                out.push(resource_row(&row)?);
            }
        }
        Ok(out)
    }

    /// The objects `name` replaced that are not deleted yet (rows `NAME/replaced-N`).
    pub async fn replaced_copies(&self, stack_id: &str, name: &str) -> Result<Vec<ResourceRow>> {
        let prefix = format!("{name}/replaced-");
        let rows = sqlx::query(
            "SELECT name, type, action, status, status_reason, physical_id, state, attributes, updated_at, properties,
                    requires, deletion_policy, traversal
             FROM resources WHERE stack_id = $1 AND SUBSTR(name, 1, CAST($3 AS INTEGER)) = $2 ORDER BY name",
        )
        .bind(stack_id)
        .bind(&prefix)
        .bind(prefix.chars().count() as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(resource_row).collect()
    }

    /// Events of a stack after `after` (an event id), oldest first.
    pub async fn events(&self, stack_id: &str, after: i64) -> Result<Vec<EventRow>> {
        self.events_page(stack_id, after, i64::MAX).await
    }

    /// At most `limit` events of a stack after `after`, oldest first.
    pub async fn events_page(
        &self,
        stack_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT id, resource, action, status, reason, physical_id, engine, at FROM events
             WHERE stack_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(stack_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// Up to `limit` resources being worked on now.
    pub async fn resources_in_progress(&self, stack_id: &str, limit: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM resources WHERE stack_id = $1 AND status = 'IN_PROGRESS' ORDER BY updated_at, name LIMIT $2",
        )
        .bind(stack_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(n,)| n).collect())
    }

    /// Resource counts by action and status.
    pub async fn resource_counts(&self, stack_id: &str) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT action, status, COUNT(*) FROM resources WHERE stack_id = $1 GROUP BY action, status ORDER BY action, status",
        )
        .bind(stack_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// What the stack was made from (template text, environments, parameters; JSON), and what
    /// it was made from before its last update, if it had one.
    pub async fn stack_sources(&self, stack_id: &str) -> Result<(String, Option<String>)> {
        Ok(
            sqlx::query_as("SELECT sources, previous_sources FROM stacks WHERE id = $1")
                .bind(stack_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The template and sources a stack had before its last update (None after a create).
    pub async fn previous(&self, stack_id: &str) -> Result<Option<(String, String)>> {
        let (t, s): (Option<String>, Option<String>) =
            sqlx::query_as("SELECT previous_template, previous_sources FROM stacks WHERE id = $1")
                .bind(stack_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(t.zip(s))
    }
}
