//! The configuration: TOML file text, `HMAC_FILE_SERVER_*` environment and `--set` overrides.
//!
//! Properties: no panic, whatever the text; a configuration that is refused says why, and
//! every problem names what it is about: a known key, the file as a whole (`config`), `--set`,
//! or the unknown name the operator wrote (so `check-config` points at the line to fix).
#![no_main]

use std::io::{Seek, Write};
use std::sync::Mutex;

use arbitrary::{Arbitrary, Unstructured};
use hmac_file_server::config::{Config, Sources, keys};
use libfuzzer_sys::fuzz_target;

/// The input: the file's text, then (after a NUL, which TOML text cannot hold) the rest.
#[derive(Arbitrary, Debug)]
struct Rest<'a> {
    env: Vec<(Var<'a>, &'a str)>,
    overrides: Vec<&'a str>,
}

#[derive(Arbitrary, Debug)]
enum Var<'a> {
    /// The variable of a known key, by index.
    Known(u16),
    /// Any name.
    Other(&'a str),
}

struct Input<'a> {
    file: &'a str,
    env: Vec<(Var<'a>, &'a str)>,
    overrides: Vec<&'a str>,
}

static FILE: Mutex<Option<tempfile::NamedTempFile>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|b| *b == 0) {
        Some(at) => (
            &data[..at],
            Unstructured::new(&data[at + 1..]).arbitrary::<Rest<'_>>().ok(),
        ),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let Rest { env, overrides } = rest.unwrap_or(Rest {
        env: Vec::new(),
        overrides: Vec::new(),
    });
    let input = Input {
        file: text,
        env,
        overrides,
    };
    let mut guard = FILE.lock().unwrap();
    let file = guard.get_or_insert_with(|| tempfile::NamedTempFile::new().unwrap());
    file.as_file().set_len(0).unwrap();
    file.rewind().unwrap();
    file.write_all(input.file.as_bytes()).unwrap();
    let env: Vec<(String, String)> = input
        .env
        .iter()
        .map(|(var, value)| {
            let name = match var {
                Var::Known(i) => keys::KEYS[usize::from(*i) % keys::KEYS.len()].env_var(),
                Var::Other(name) => name.to_string(),
            };
            (name, value.to_string())
        })
        .collect();
    let sources = Sources {
        file: Some(file.path().to_path_buf()),
        env: env.clone(),
        overrides: input.overrides.iter().map(ToString::to_string).collect(),
    };
    let Err(error) = Config::load(&sources) else { return };
    let file_keys: Vec<String> = input
        .file
        .parse::<toml::Table>()
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    assert!(!error.problems.is_empty(), "refused without a reason");
    for problem in &error.problems {
        assert!(!problem.message.is_empty());
        let named = problem.key == "config"
            || problem.key == "--set"
            || keys::by_name(&problem.key).is_some()
            || file_keys.contains(&problem.key)
            || env.iter().any(|(var, _)| *var == problem.key)
            || input.overrides.iter().any(|o| o.contains(problem.key.as_str()));
        assert!(named, "a problem names nothing the operator wrote: {problem}");
    }
});
