//! Host bindings of the `hatchery:task/task-module` world, generated from `wit/`.
//!
//! Private to the runtime: the rest of the host sees `Manifest`, `RunInfo` and `TaskFailure`.

wasmtime::component::bindgen!({
    world: "task-module",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
});
