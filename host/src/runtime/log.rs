//! The `kiln:plugin/log` import: plugin log records become tracing events tagged with the plugin
//! and the call, cut to the configured size and capped in number per call.

use super::bindings::resource::kiln::plugin::log::{Field, Host, Level};
use super::host_state::HostState;

/// More records than this in one call are dropped (with one warning) so that a chatty or
/// looping plugin cannot flood the host's log.
const MAX_RECORDS_PER_CALL: u32 = 1000;

impl Host for HostState {
    fn log(&mut self, level: Level, message: String, fields: Vec<Field>) -> wasmtime::Result<()> {
        self.log_records += 1;
        let plugin = self.plugin.name.as_str();
        let (stack, resource) = (self.label.stack.as_str(), self.label.resource.as_str());
        if self.log_records > MAX_RECORDS_PER_CALL {
            if self.log_records == MAX_RECORDS_PER_CALL + 1 {
                tracing::warn!(
                    plugin,
                    stack,
                    resource,
                    "plugin logged over {MAX_RECORDS_PER_CALL} records in one call; dropping the rest"
                );
            }
            return Ok(());
        }
        let max = self.plugin.limits.max_log_bytes as usize;
        let mut text = cut(&message, max);
        for f in &fields {
            text.push_str(&format!(" {}={}", cut(&f.key, 64), cut(&f.value, max)));
        }
        let text = cut(&text, max);
        match level {
            Level::Trace => {
                tracing::trace!(target: "kiln::plugin", plugin, stack, resource, "{text}")
            }
            Level::Debug => {
                tracing::debug!(target: "kiln::plugin", plugin, stack, resource, "{text}")
            }
            Level::Info => {
                tracing::info!(target: "kiln::plugin", plugin, stack, resource, "{text}")
            }
            Level::Warn => {
                tracing::warn!(target: "kiln::plugin", plugin, stack, resource, "{text}")
            }
            Level::Error => {
                tracing::error!(target: "kiln::plugin", plugin, stack, resource, "{text}")
            }
        }
        Ok(())
    }
}

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
