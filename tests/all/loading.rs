//! Loading components: bad files are rejected with messages that say what is wrong, and the
//! compile cache is reused across restarts.

use hatchery::runtime::{EngineConfig, LoadError, Runtime, RuntimeConfig};

use crate::support::{json, shared_runtime};

async fn rejection(bytes: &[u8]) -> LoadError {
    shared_runtime()
        .load(bytes)
        .await
        .expect_err("the file is rejected")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_wasm_is_rejected() {
    let error = rejection(b"#!/bin/sh\necho hi\n").await;
    assert_eq!(error, LoadError::NotWasm);
    assert!(error.to_string().contains("not a WebAssembly file"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_core_module_is_rejected_with_a_hint() {
    // The smallest valid core module: magic and version 1.
    let error = rejection(b"\0asm\x01\0\0\0").await;
    assert_eq!(error, LoadError::CoreModule);
    assert!(error.to_string().contains("wasm32-wasip2"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_component_is_rejected() {
    let bytes = hatchery_guests::read(hatchery_guests::HELLO);
    let error = rejection(&bytes[..bytes.len() / 2]).await;
    let LoadError::Invalid(message) = &error else {
        panic!("expected Invalid, got {error:?}")
    };
    assert!(!message.is_empty());
    assert!(
        error.to_string().starts_with("invalid component: "),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_of_another_world_is_rejected() {
    let error = rejection(&hatchery_guests::read(hatchery_guests::WRONG_WORLD)).await;
    assert!(matches!(error, LoadError::WrongWorld(_)), "{error:?}");
    assert!(
        error.to_string().contains("hatchery:task/task-module"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_import_the_sandbox_does_not_grant_is_named_in_one_error_before_compiling() {
    let component = wat::parse_str(
        r#"(component
            (import "wasi:io/poll@0.2.0" (instance))
            (import "wasi:keyvalue/store@0.2.0-draft" (instance))
            (import "example:secrets/vault" (instance))
        )"#,
    )
    .expect("valid component text");
    let runtime = crate::support::new_runtime();
    let error = runtime.load(&component).await.expect_err("refused");
    assert_eq!(
        error,
        LoadError::ForbiddenImport(vec![
            "wasi:keyvalue/store@0.2.0-draft".into(),
            "example:secrets/vault".into()
        ])
    );
    let message = error.to_string();
    assert!(
        message.starts_with(
            "the component imports `wasi:keyvalue/store@0.2.0-draft`, `example:secrets/vault`, \
             which Hatchery does not provide"
        ),
        "{message}"
    );
    assert_eq!(runtime.compile_count(), 0, "refused before any compile");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_reading_a_file_loads_but_finds_no_directory() {
    // `wasi:filesystem` is linked for interpreters, with no preopened directory: a task that
    // reads `/etc/passwd` gets an error from its own standard library, not the host's file.
    let runtime = shared_runtime();
    let module = runtime
        .load(&hatchery_guests::read(hatchery_guests::FILESYSTEM))
        .await
        .expect("loads");
    let report = runtime
        .execute(
            &module,
            hatchery::runtime::Attempt::new("read", "read", "null"),
        )
        .await;
    let Err(hatchery::runtime::TaskFailure::Failed(message)) = &report.outcome else {
        panic!("expected the task's own error, got {:?}", report.outcome);
    };
    assert!(message.contains("No such file or directory"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_with_a_cycle_is_rejected() {
    let error = rejection(&hatchery_guests::read(hatchery_guests::CYCLE)).await;
    assert!(matches!(error, LoadError::Manifest(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "invalid manifest: workflow `cyclic`: the tasks' parents form a cycle"
    );
}

fn runtime_with_cache(dir: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        engine: EngineConfig {
            max_instances: 4,
            ..EngineConfig::default()
        },
        cache_dir: Some(dir.to_owned()),
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compile_cache_is_reused_after_a_restart() {
    let cache = tempfile::tempdir().expect("temporary directory");
    let bytes = hatchery_guests::read(hatchery_guests::HELLO);

    let first = runtime_with_cache(cache.path());
    first.load(&bytes).await.expect("loads");
    assert_eq!(first.compile_count(), 1);
    drop(first);

    let restarted = runtime_with_cache(cache.path());
    let module = restarted.load(&bytes).await.expect("loads from the cache");
    assert_eq!(restarted.compile_count(), 0, "a restart must not recompile");
    let attempt = hatchery::runtime::Attempt::new("hello", "greet", r#"{"name":"cache"}"#);
    let output = restarted
        .execute(&module, attempt)
        .await
        .outcome
        .expect("runs");
    assert_eq!(json(&output), json(r#"{"greeting":"Hello, cache!"}"#));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_cache_entry_is_recompiled_not_loaded() {
    let cache = tempfile::tempdir().expect("temporary directory");
    let bytes = hatchery_guests::read(hatchery_guests::HELLO);
    runtime_with_cache(cache.path())
        .load(&bytes)
        .await
        .expect("loads");
    for entry in std::fs::read_dir(cache.path()).expect("cache dir") {
        let path = entry.expect("entry").path();
        let mut artifact = std::fs::read(&path).expect("read entry");
        let middle = artifact.len() / 2;
        artifact[middle] ^= 0xff;
        std::fs::write(&path, artifact).expect("corrupt entry");
    }
    let restarted = runtime_with_cache(cache.path());
    restarted.load(&bytes).await.expect("recompiles");
    assert_eq!(restarted.compile_count(), 1);
}

fn runtime_with_key(key: Option<&str>) -> Runtime {
    Runtime::new(RuntimeConfig {
        engine: EngineConfig::with_instances(4),
        artifact_key: key.map(hatchery::runtime::ArtifactKey::derive),
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_artifact_loads_without_compiling_and_anything_else_is_compiled() {
    const KEY: &str = "the fleet's secret, thirty-two characters or more";
    let bytes = hatchery_guests::read(hatchery_guests::HELLO);
    let first = runtime_with_key(Some(KEY));
    let module = first.load(&bytes).await.expect("loads");
    let sealed = first.sealed_artifact(&module).expect("a key seals");
    assert!(runtime_with_key(None).sealed_artifact(&module).is_none());

    let other = runtime_with_key(Some(KEY));
    let loaded = other
        .load_shared(&bytes, Some(sealed.clone()))
        .await
        .expect("loads");
    assert_eq!(other.compile_count(), 0, "the sealed artifact is used");
    let output = other
        .execute(
            &loaded,
            hatchery::runtime::Attempt::new("hello", "greet", r#"{"name":"Ada"}"#),
        )
        .await
        .outcome
        .expect("runs");
    assert_eq!(json(&output), json(r#"{"greeting":"Hello, Ada!"}"#));

    // A torn or forged row, another key, no key: never deserialized, compiled instead.
    let mut tampered = sealed.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    for (runtime, sealed) in [
        (runtime_with_key(Some(KEY)), tampered),
        (
            runtime_with_key(Some("another fleet's secret, also long enough")),
            sealed.clone(),
        ),
        (runtime_with_key(None), sealed),
    ] {
        runtime
            .load_shared(&bytes, Some(sealed))
            .await
            .expect("still loads");
        assert_eq!(runtime.compile_count(), 1);
    }
}
