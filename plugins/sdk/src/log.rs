//! Structured logging into the host's log, over the `kiln:plugin/log` import.
//!
//! The host tags each record with the plugin, stack and resource of the current call, so a
//! message only needs to say what happened: `log::info("created", &[("id", &id)])`.
//! Outside a component (native tests) there is no host: records go to stderr.

pub use crate::bindings::wit_log::Level;

/// Writes one record with key/value fields.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    #[cfg(target_arch = "wasm32")]
    {
        let fields: Vec<crate::bindings::wit_log::Field> = fields
            .iter()
            .map(|(k, v)| crate::bindings::wit_log::Field {
                key: (*k).to_string(),
                value: (*v).to_string(),
            })
            .collect();
        crate::bindings::wit_log::log(level, message, &fields);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message} {fields:?}");
}

/// Logs at `trace` level.
pub fn trace(message: &str, fields: &[(&str, &str)]) {
    log(Level::Trace, message, fields)
}

/// Logs at `debug` level.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields)
}

/// Logs at `info` level.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields)
}

/// Logs at `warn` level.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields)
}

/// Logs at `error` level.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(Level::Error, message, fields)
}
