//! The generated bindings, one module per world, each behind its cargo feature.
//!
//! wit-bindgen embeds a `component-type` section per `generate!`, and wit-component merges all
//! of a binary's sections: a binary carrying both worlds would have to export both `provider`
//! and `policy`. Hence the features, and at most one of them in a wasm build.

#[cfg(all(target_arch = "wasm32", feature = "resource", feature = "policy"))]
compile_error!(
    "kiln-plugin-sdk: enable exactly one of the features `resource` and `policy` in a wasm \
     build (build resource plugins and policies in separate cargo invocations)"
);

#[cfg(not(any(feature = "resource", feature = "policy")))]
compile_error!("kiln-plugin-sdk: enable the feature `resource` or `policy`");

/// Bindings of the `resource-plugin` world.
#[cfg(feature = "resource")]
pub mod resource {
    wit_bindgen::generate!({
        world: "resource-plugin",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_resource_plugin",
        default_bindings_module: "::kiln_plugin_sdk::__private::resource",
    });
}

/// Bindings of the `retry-policy` world. With both features on (native tests only), the shared
/// `types` and `log` interfaces come from the resource bindings so that one `PluginError` serves
/// both.
#[cfg(feature = "policy")]
pub mod policy {
    #[cfg(feature = "resource")]
    wit_bindgen::generate!({
        world: "retry-policy",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_retry_policy",
        default_bindings_module: "::kiln_plugin_sdk::__private::policy",
        with: {
            "kiln:plugin/types@0.1.0": crate::bindings::resource::kiln::plugin::types,
            "kiln:plugin/log@0.1.0": crate::bindings::resource::kiln::plugin::log,
        },
    });
    #[cfg(not(feature = "resource"))]
    wit_bindgen::generate!({
        world: "retry-policy",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_retry_policy",
        default_bindings_module: "::kiln_plugin_sdk::__private::policy",
    });
}

#[cfg(all(feature = "policy", not(feature = "resource")))]
pub use policy::kiln::plugin::{log as wit_log, types};
/// The interfaces both worlds import, from whichever bindings are present.
#[cfg(feature = "resource")]
pub use resource::kiln::plugin::{log as wit_log, types};
