//! Host-side bindings generated from `wit/` (package `kiln:plugin`).

/// The `resource-plugin` world; also owns the types shared with `retry-policy`.
pub(crate) mod resource {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "resource-plugin",
        imports: {
            "kiln:plugin/http.send": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

/// The `retry-policy` world, reusing the shared interfaces generated above.
pub(crate) mod policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "retry-policy",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "kiln:plugin/types": super::resource::kiln::plugin::types,
            "kiln:plugin/log": super::resource::kiln::plugin::log,
        },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

/// The contract version this host speaks, from `wit/plugin.wit`.
pub const CONTRACT_VERSION: &str = "0.1.0";
