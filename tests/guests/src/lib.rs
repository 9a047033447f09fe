//! Paths of the guest components (examples and hostile fixtures), built by this crate's
//! `build.rs` for `wasm32-wasip2`, for the tests and benchmarks to load.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The bytes of the component at `path` (one of this crate's constants).
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read guest component {path}: {e}"))
}
