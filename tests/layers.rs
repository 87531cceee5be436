//! The layering of docs/ARCHITECTURE.md holds: no module of `src/` names a
//! module of a layer above its own (`crate::api` from a backend,
//! `crate::embedded` from `patterns`, ...), and the two backends never
//! name each other. An import that runs back up a layer brings back the
//! import loops the backend traits removed, so it fails here.

use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its layer: a module may name only
/// modules of a lower layer (or its own). Shared leaves (`error`,
/// `record`, `trace`) sit below everything.
const LAYERS: &[(&str, u32)] = &[
    ("api", 90),
    ("dispatch", 90),
    ("serve", 85),
    ("embedded", 80),
    ("nats", 80),
    ("remote", 80),
    ("wire", 75),
    ("backend", 70),
    ("inspect", 65),
    ("patterns", 60),
    ("state", 50),
    ("log", 40),
    ("index", 30),
    ("record", 25),
    ("format", 20),
    ("io", 10),
    ("storage", 10),
    ("clock", 10),
    ("error", 0),
    ("trace", 0),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The modules `crate::<module>` names in `source`, before its unit tests.
fn named_modules(source: &str) -> Vec<&str> {
    let code = source.split("#[cfg(test)]").next().unwrap_or(source);
    code.match_indices("crate::")
        .map(|(at, _)| {
            let rest = &code[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn no_module_names_a_module_of_a_higher_layer_and_the_backends_never_name_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative
            .components()
            .next()
            .expect("a component")
            .as_os_str()
            .to_string_lossy();
        let own = top.trim_end_matches(".rs");
        let Some(own_layer) = layer(own) else {
            continue; // lib.rs, fuzzing: they sit above every layer
        };
        let source = std::fs::read_to_string(file).expect("read");
        for named in named_modules(&source) {
            let Some(named_layer) = layer(named) else { continue };
            let sideways = own_layer == named_layer && own != named && named_layer == 80;
            if named_layer > own_layer || sideways {
                upward.push(format!("{} names crate::{named}", relative.display()));
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(
        upward.is_empty(),
        "imports against the layering:\n{}",
        upward.join("\n")
    );
}
