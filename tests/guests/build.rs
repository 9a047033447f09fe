//! Compiles every guest component (examples and test fixtures) for `wasm32-wasip2` with the
//! `guest` profile, and writes their paths into `$OUT_DIR/guests.rs`.
//!
//! It runs a nested cargo with its own target directory: the outer build holds the lock of the
//! workspace target directory, and the guests need a different target anyway. The Python and
//! JavaScript examples are built with the pinned componentize-py and componentize-js that
//! `scripts/polyglot-tools` installs into `target/polyglot` (run here when they are missing).

#![allow(
    clippy::expect_used,
    reason = "a build script reports a failed step by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, wasm file name, constant name) of every guest.
const GUESTS: &[(&str, &str, &str)] = &[
    ("hello", "hello", "HELLO"),
    ("etl", "etl", "ETL"),
    ("fanout", "fanout", "FANOUT"),
    ("flow", "flow", "FLOW_EXAMPLE"),
    ("http-fetch", "http_fetch", "HTTP_FETCH"),
    ("secrets-guest", "secrets_guest", "SECRETS"),
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
        "scripts/polyglot-tools",
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
    for guest in POLYGLOT {
        let path = build_polyglot(workspace, guest);
        constants.push_str(&format!(
            "/// The `{}` component ({}).\npub const {}: &str = {:?};\n",
            guest.dir,
            guest.language,
            guest.constant,
            path.display().to_string()
        ));
    }
    let generated =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("guests.rs");
    std::fs::write(generated, constants).expect("cannot write guests.rs");
}

/// A guest written in another language, built by that language's stock toolchain.
struct Polyglot {
    language: &'static str,
    /// Its directory in the workspace, holding `app.py` or `app.js`.
    dir: &'static str,
    constant: &'static str,
}

const POLYGLOT: &[Polyglot] = &[
    Polyglot {
        language: "Python",
        dir: "examples/python-hello",
        constant: "PYTHON_HELLO",
    },
    Polyglot {
        language: "JavaScript",
        dir: "examples/js-hello",
        constant: "JS_HELLO",
    },
    Polyglot {
        language: "Python",
        dir: "tests/guests/python-broken",
        constant: "PYTHON_BROKEN",
    },
    Polyglot {
        language: "JavaScript",
        dir: "tests/guests/js-raw",
        constant: "JS_RAW",
    },
    Polyglot {
        language: "Python",
        dir: "tests/guests/python-bench",
        constant: "PYTHON_BENCH",
    },
    Polyglot {
        language: "JavaScript",
        dir: "tests/guests/js-bench",
        constant: "JS_BENCH",
    },
];

/// Builds `guest` into `target/guests/polyglot/` unless its component is newer than every source.
fn build_polyglot(workspace: &Path, guest: &Polyglot) -> PathBuf {
    let out_dir = workspace.join("target").join("guests").join("polyglot");
    std::fs::create_dir_all(&out_dir).expect("cannot create target/guests/polyglot");
    let name = guest.dir.rsplit('/').next().unwrap_or(guest.dir);
    let output = out_dir.join(format!("{name}.wasm"));
    let sdk = if guest.language == "Python" {
        "guest-sdk/python"
    } else {
        "guest-sdk/js"
    };
    let sources = [
        workspace.join(guest.dir),
        workspace.join(sdk),
        workspace.join("wit"),
    ];
    if newest_source(&sources) < modified(&output) {
        return output;
    }
    let tools = workspace.join("target").join("polyglot");
    let componentize_py = tools.join("venv/bin/componentize-py");
    let componentize_js = tools.join("js/node_modules/.bin/componentize-js");
    if !componentize_py.exists() || !componentize_js.exists() {
        let status = Command::new("bash")
            .arg(workspace.join("scripts/polyglot-tools"))
            .status()
            .expect("cannot run scripts/polyglot-tools");
        assert!(
            status.success(),
            "installing componentize-py and componentize-js failed (they come from PyPI and npm): \
             run scripts/polyglot-tools to see why"
        );
    }
    let mut command = if guest.language == "Python" {
        let mut command = Command::new(componentize_py);
        // No __pycache__ in the sources: it would make them look newer than the component.
        command
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args([
                "-d",
                "guest-sdk/python/wit",
                "-w",
                "task-module",
                "componentize",
                "app",
            ])
            .args(["-p", "guest-sdk/python", "-p", guest.dir]);
        command
    } else {
        // componentize-js resolves the entry's imports from the working directory.
        let mut command = Command::new(componentize_js);
        command.arg(format!("{}/app.js", guest.dir)).args([
            "--wit",
            "guest-sdk/js/wit",
            "-n",
            "task-module",
        ]);
        command
    };
    let status = command
        .current_dir(workspace)
        .arg("-o")
        .arg(&output)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the {} toolchain: {e}", guest.language));
    assert!(status.success(), "building {} failed", guest.dir);
    output
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH)
}

/// The newest modification time of any file under `paths` (symlinks followed).
fn newest_source(paths: &[PathBuf]) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    let mut pending: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = pending.pop() {
        newest = newest.max(modified(&path));
        if let Ok(entries) = std::fs::read_dir(&path) {
            pending.extend(entries.flatten().map(|entry| entry.path()));
        }
    }
    newest
}
