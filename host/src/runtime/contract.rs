//! The contract a component must keep before it is linked: it exports one of Kiln's worlds
//! (`kiln:plugin/provider` or `kiln:plugin/policy`) at a compatible version, imports only what
//! the host provides, and describes its types sensibly. A refusal names the plugin and says why,
//! more clearly than a link error would.

use serde_json::Value;
use wasmtime::component::Component;

use super::PluginInfo;
use super::bindings::CONTRACT_VERSION;
use super::error::LoadError;
use super::plugin::World;

pub(super) type ContractFacts = (World, String, Vec<String>, Vec<String>);

/// Finds the world and contract version from the component's export names, and refuses an
/// incompatible version or an import the host does not provide, before linking (whose errors
/// would be much less clear).
pub(super) fn check_contract(
    engine: &wasmtime::Engine,
    component: &Component,
    plugin: &str,
    origin: &str,
) -> Result<ContractFacts, LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let incompatible = |found: &str| LoadError::IncompatibleContract {
        plugin: plugin.into(),
        origin: origin.into(),
        found: found.into(),
        supported: CONTRACT_VERSION.into(),
    };
    let mut found = None;
    for name in &exports {
        let (world, version) = match name.split_once('@') {
            Some(("kiln:plugin/provider", v)) => (World::ResourcePlugin, v),
            Some(("kiln:plugin/policy", v)) => (World::RetryPolicy, v),
            _ => continue,
        };
        if !compatible(version) {
            return Err(incompatible(version));
        }
        found = Some((world, version.to_string()));
    }
    for name in &imports {
        if let Some(("kiln:plugin/log" | "kiln:plugin/http" | "kiln:plugin/types", v)) =
            name.split_once('@')
        {
            if !compatible(v) {
                return Err(incompatible(v));
            }
        } else if !name.starts_with("wasi:") {
            return Err(LoadError::Contract {
                plugin: plugin.into(),
                origin: origin.into(),
                message: format!("it imports `{name}`, which Kiln does not provide"),
            });
        }
    }
    let Some((world, version)) = found else {
        return Err(LoadError::Contract {
            plugin: plugin.into(),
            origin: origin.into(),
            message: format!(
                "it exports neither kiln:plugin/provider nor kiln:plugin/policy (exports: {})",
                if exports.is_empty() {
                    "none".to_string()
                } else {
                    exports.join(", ")
                }
            ),
        });
    };
    Ok((world, version, imports, exports))
}

/// Semver compatibility with the host's contract: same major, and same minor while major is 0.
fn compatible(version: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split(['.', '-', '+']);
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parse(version), parse(CONTRACT_VERSION)) {
        (Some((maj, min)), Some((hmaj, hmin))) => maj == hmaj && (maj != 0 || min == hmin),
        _ => false,
    }
}

pub(super) fn check_info(info: &PluginInfo) -> Result<(), String> {
    if info.types.is_empty() {
        return Err("describe lists no resource types".into());
    }
    for t in &info.types {
        if t.type_name.trim().is_empty() {
            return Err("describe lists a type with an empty name".into());
        }
        let mut seen = std::collections::HashSet::new();
        for p in &t.properties {
            if !seen.insert(p.name.as_str()) {
                return Err(format!(
                    "type {}: property `{}` is listed twice",
                    t.type_name, p.name
                ));
            }
            if let Some(d) = &p.default
                && serde_json::from_str::<Value>(d).is_err()
            {
                return Err(format!(
                    "type {}: default of `{}` is not valid JSON",
                    t.type_name, p.name
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn contract_versions_follow_semver() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.7"));
        assert!(!compatible("0.2.0"), "0.x minors are breaking");
        assert!(!compatible("1.0.0"));
        assert!(!compatible("9.0.0"));
        assert!(!compatible("garbage"));
    }
}
