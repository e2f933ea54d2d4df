//! Waiting for a stack's action: at once (`--no-wait`) or to its end, with every event as a line
//! and, on a terminal, a status line with counts and the resources being worked on; and the
//! exit status the end deserves (a rolled-back action is a failure).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::backend::Backend;
use super::stack::print_outputs;
use super::{Failure, Format, api_failure, exit};
use crate::model::{Action, EventStatus, Status};
use crate::service::operations::Operations;
use crate::service::wire::{Event, Stack};
use crate::store::format_ms;

/// After an action started: return at once (`--no-wait`), or wait and show the outcome.
pub(super) async fn after_start(
    b: &Backend,
    row: &Stack,
    no_wait: bool,
    format: Format,
) -> Result<(), Failure> {
    if no_wait {
        println!("{} {}_{} (id {})", row.name, row.action, row.status, row.id);
        return Ok(());
    }
    let row = if row.status == Status::InProgress {
        wait(b, row).await?
    } else {
        row.clone()
    };
    let outs = b.outputs(&row.id).await.map_err(api_failure)?;
    print_outputs(&outs, format);
    finished(&row)
}

/// After an action with no outputs to show (delete, check) started: return at once
/// (`--no-wait`), or wait for its end.
pub(super) async fn wait_unless(b: &Backend, row: &Stack, no_wait: bool) -> Result<(), Failure> {
    if no_wait {
        println!("{} {}_{}", row.name, row.action, row.status);
        return Ok(());
    }
    finished(&wait(b, row).await?)
}

/// Prints the stack's events as they happen, until its current action has ended and every
/// event of it is shown.
pub(super) async fn follow_events(b: &Backend, row: &Stack, format: Format) -> Result<(), Failure> {
    let mut last = 0;
    loop {
        // Read the status first: events written before an action ends are then all seen.
        let current = b.show(&row.id, false).await.map_err(api_failure)?.stack;
        let events = b.events(&row.id, last).await.map_err(api_failure)?;
        for e in &events {
            last = e.id;
            match format {
                Format::Json => println!("{}", serde_json::to_string(e).unwrap()),
                Format::Table => println!("{}", event_cells(e).join("  ")),
            }
        }
        let _ = std::io::stdout().flush();
        if current.status != Status::InProgress {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the stack's action ends, showing progress: every event as a line, and on a
/// terminal a status line with counts and current resources. In embedded mode this
/// process's engine does the work meanwhile.
async fn wait(b: &Backend, row: &Stack) -> Result<Stack, Failure> {
    let working = b.work();
    let result = watch_progress(b, row).await;
    if let Some((stop_tx, task)) = working {
        let _ = stop_tx.send(true);
        let _ = task.await;
    }
    result
}

async fn watch_progress(b: &Backend, row: &Stack) -> Result<Stack, Failure> {
    let tty = std::io::stderr().is_terminal();
    // Show this action's events: from its "Stack ... started" event on.
    let earlier = b.events(&row.id, 0).await.map_err(api_failure)?;
    let mut last_event = earlier
        .iter()
        .rev()
        .find(|e| {
            e.resource.is_none() && e.action == row.action && e.status == EventStatus::InProgress
        })
        .map_or(0, |e| e.id - 1);
    let mut watched = row.traversal;
    loop {
        let shown = b.show(&row.id, false).await.map_err(api_failure)?;
        let current = &shown.stack;
        let events = b.events(&row.id, last_event).await.map_err(api_failure)?;
        if tty {
            eprint!("\r\x1b[2K");
        }
        for e in &events {
            last_event = e.id;
            if !tty || e.status == EventStatus::Failed || e.resource.is_none() {
                eprintln!("{}", event_cells(e).join("  "));
            }
        }
        if current.status != Status::InProgress {
            return Ok(shown.stack);
        }
        if current.traversal != watched {
            if current.action != Action::Rollback || current.traversal != watched + 1 {
                // Another action took over the stack.
                return Ok(shown.stack);
            }
            // The action failed and its rollback started: follow it to its end.
            watched = current.traversal;
        }
        if tty {
            let counts: Vec<String> = shown
                .resources
                .iter()
                .map(|c| format!("{} {}", c.count, c.status))
                .collect();
            let busy = if shown.in_progress.is_empty() {
                String::new()
            } else {
                format!(" — {}", shown.in_progress.join(", "))
            };
            let line = format!(
                "{} {}_IN_PROGRESS: {}{busy}",
                current.name,
                current.action,
                counts.join(", ")
            );
            // One terminal line, so that the next redraw overwrites it.
            eprint!("{}", line.chars().take(110).collect::<String>());
            let _ = std::io::stderr().flush();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn finished(row: &Stack) -> Result<(), Failure> {
    if row.action == Action::Rollback {
        // Rolled back (or failed to): the action asked for did not happen.
        let outcome = if row.status == Status::Complete {
            "was rolled back".to_string()
        } else {
            format!("its rollback failed too: {}", row.status_reason)
        };
        return Err(Failure::new(
            exit::FAILED,
            format!(
                "{} ROLLBACK_{}: the action failed and {outcome}; see `kiln stack events {}`",
                row.name, row.status, row.name
            ),
        ));
    }
    if row.status == Status::Complete {
        println!("{} {}_COMPLETE", row.name, row.action);
        Ok(())
    } else {
        Err(Failure::new(
            exit::FAILED,
            format!(
                "{} {}_{}: {}",
                row.name, row.action, row.status, row.status_reason
            ),
        ))
    }
}

pub(super) fn event_cells(e: &Event) -> Vec<String> {
    vec![
        format_ms(e.at),
        e.resource.clone().unwrap_or_else(|| "(stack)".into()),
        format!("{}_{}", e.action, e.status),
        e.reason.clone(),
    ]
}
