//! The layers of `src/` (docs/architecture.md): each top-level module may use only the
//! modules of lower layers, so there is no import cycle between them, and the request
//! handlers and the upload engine never touch the file system themselves (only through the
//! store's seams). Read from the source text: every `crate::x` path and every `super::` path
//! that climbs out of its top-level module, outside comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use the modules of the layers before its own.
const LAYERS: &[&[&str]] = &[
    &["clock", "fault", "key", "metrics"],
    &["config"],
    &["auth"],
    &["store"],
    &["state"],
    &["ops"],
    &["resumable"],
    &["app"],
    &["http"],
    &["server"],
];

/// Modules that must reach files only through the store's seams.
const NO_FILE_SYSTEM: &[&str] = &["http", "resumable", "app"];
const FILE_SYSTEM_PATHS: &[&str] = &["std::fs", "tokio::fs", "rustix::", "std::os::fd", "File::open"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/http/put.rs` → `["http", "put"]`, `src/http/mod.rs` →
/// `["http"]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without its comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code refers to (other than its own). Text after an inline
/// `mod name {` (the files' test modules, which come last) is one module deeper.
fn references(module: &[String], code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let (outer, inner) = match find_inline_mod(code) {
        Some((at, name)) => (&code[..at], Some((&code[at..], name))),
        None => (code, None),
    };
    collect(module, outer, &mut out);
    if let Some((inner, name)) = inner {
        let mut deeper = module.to_vec();
        deeper.push(name);
        collect(&deeper, inner, &mut out);
    }
    out.remove(&module[0]);
    out.remove("");
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Where the first inline module starts, and its name.
fn find_inline_mod(code: &str) -> Option<(usize, String)> {
    let mut from = 0;
    while let Some(i) = code[from..].find("mod ") {
        let at = from + i;
        let name: String = code[at + 4..].chars().take_while(|c| is_ident(*c)).collect();
        let after = code[at + 4 + name.len()..].trim_start();
        let starts_word = at == 0 || !code[..at].ends_with(is_ident);
        if starts_word && !name.is_empty() && after.starts_with('{') {
            return Some((at, name));
        }
        from = at + 4;
    }
    None
}

/// The names a path tail starts with: `store::X` → store, `{store, state::Y}` → both.
fn heads(tail: &str) -> Vec<String> {
    if let Some(group) = tail.strip_prefix('{') {
        let inside = &group[..group.find('}').unwrap_or(group.len())];
        return inside
            .split(',')
            .map(|item| item.trim().chars().take_while(|c| is_ident(*c)).collect())
            .collect();
    }
    vec![tail.chars().take_while(|c| is_ident(*c)).collect()]
}

fn collect(module: &[String], text: &str, out: &mut BTreeSet<String>) {
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let before_ok = i == 0 || !text[..i].ends_with(|c: char| is_ident(c) || c == ':');
        if before_ok && let Some(tail) = rest.strip_prefix("crate::") {
            out.extend(heads(tail));
            i += "crate::".len();
            continue;
        }
        if before_ok && rest.starts_with("super::") {
            let mut climbs = 0;
            let mut tail = rest;
            while let Some(t) = tail.strip_prefix("super::") {
                climbs += 1;
                tail = t;
            }
            if climbs >= module.len() {
                out.extend(heads(tail));
            }
            i += "super::".len() * climbs;
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
}

fn sources() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| {
        let name = f.strip_prefix(&src).unwrap();
        name != Path::new("lib.rs") && name != Path::new("main.rs")
    });
    files.sort();
    (src, files)
}

#[test]
fn modules_use_only_lower_layers() {
    let (src, files) = sources();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut violations = Vec::new();
    for file in &files {
        let module = module_path(&src, file);
        let top = &module[0];
        let Some(own) = layer_of(top) else {
            violations.push(format!("{}: top-level module `{top}` is in no layer", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in references(&module, &code(&text)) {
            graph.entry(top.clone()).or_default().insert(used.clone());
            match layer_of(&used) {
                Some(l) if l < own => {}
                Some(_) => violations.push(format!(
                    "{}: `{top}` uses `{used}`, which is not in a lower layer",
                    file.strip_prefix(&src).unwrap().display()
                )),
                None => violations.push(format!(
                    "{}: `{top}` uses `crate::{used}`, a module in no layer",
                    file.strip_prefix(&src).unwrap().display()
                )),
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layers:\n{}\n(graph: {graph:?})",
        violations.join("\n")
    );
    // Every top-level module of lib.rs is in the table, and every layer exists.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let layered: BTreeSet<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    assert_eq!(declared, layered, "lib.rs's modules and the layer table differ");
}

#[test]
fn handlers_and_engine_reach_files_only_through_the_store() {
    let (src, files) = sources();
    let mut found = Vec::new();
    for file in &files {
        let module = module_path(&src, file);
        if !NO_FILE_SYSTEM.contains(&module[0].as_str()) {
            continue;
        }
        let text = code(&std::fs::read_to_string(file).unwrap());
        for path in FILE_SYSTEM_PATHS {
            if text.contains(path) {
                found.push(format!("{}: {path}", file.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "file-system access outside the store:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_sees_what_it_must() {
    let put = ["http".to_string(), "put".to_string()];
    let http = ["http".to_string()];
    let code = "use crate::store::Staged;\nuse super::body;\nlet x = crate::clock::now_unix();";
    let refs = references(&put, code);
    assert_eq!(refs, BTreeSet::from(["clock".to_string(), "store".to_string()]));
    let refs = references(&http, "use super::app::AppState; use super::super::x;");
    assert!(refs.contains("app"), "{refs:?}");
    let refs = references(&put, "use super::super::server::X;");
    assert!(refs.contains("server"), "{refs:?}");
    let refs = references(&http, "use crate::{app::AppState, store};");
    assert_eq!(refs, BTreeSet::from(["app".to_string(), "store".to_string()]));
    let refs = references(
        &http,
        "fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::server;\n}",
    );
    assert_eq!(
        refs,
        BTreeSet::from(["server".to_string()]),
        "a test module is one level deeper"
    );
    assert!(
        references(
            &put,
            &self::code("// crate::server in a comment\n/// [`crate::server`]")
        )
        .is_empty(),
        "comments are not imports"
    );
    assert!(
        references(&put, "my_crate::server::x").is_empty(),
        "another crate's path is not ours"
    );
}
