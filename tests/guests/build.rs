//! Compiles every guest component (examples and test fixtures) for `wasm32-wasip2` with the
//! `guest` profile, and writes their paths into `$OUT_DIR/guests.rs`.
//!
//! It runs a nested cargo with its own target directory: the outer build holds the lock of the
//! workspace target directory, and the guests need a different target anyway.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, wasm file name, constant name) of every guest.
const GUESTS: &[(&str, &str, &str)] = &[
    ("hello", "hello", "HELLO"),
    ("etl", "etl", "ETL"),
    ("fanout", "fanout", "FANOUT"),
    ("flow", "flow", "FLOW_EXAMPLE"),
    ("hostile", "hostile", "HOSTILE"),
    ("bench-guest", "bench_guest", "BENCH"),
    ("wrong-world", "wrong_world", "WRONG_WORLD"),
    ("cycle", "cycle", "CYCLE"),
    ("filesystem", "filesystem", "FILESYSTEM"),
    ("durable", "durable", "DURABLE"),
    ("flow-rules", "flow_rules", "FLOW"),
];

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("tests/guests is two levels below the workspace");
    for watched in [
        "wit",
        "guest-sdk",
        "examples",
        "tests/guests",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let target_dir = workspace.join("target").join("guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--profile", "guest", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target_dir)
        // Flags meant for the host build must not leak into the guests'.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG");
    for (package, _, _) in GUESTS {
        command.args(["-p", package]);
    }
    let status = command
        .status()
        .expect("cannot run cargo to build the guest components");
    assert!(
        status.success(),
        "building the guest components failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
    );
    let out_dir = target_dir.join("wasm32-wasip2").join("guest");
    let mut constants = String::new();
    for (package, file, constant) in GUESTS {
        let path = out_dir.join(format!("{file}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        constants.push_str(&format!(
            "/// The `{package}` component.\npub const {constant}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    let generated =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("guests.rs");
    std::fs::write(generated, constants).expect("cannot write guests.rs");
}
