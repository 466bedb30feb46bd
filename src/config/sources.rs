//! Where configuration text comes from, and how it becomes one table: the TOML file (key names
//! in any case, as prosody-filer writes them), then the `HMAC_FILE_SERVER_<KEY>` environment,
//! then `--set Key=Value`, each later one replacing the earlier. Unknown keys and variables are
//! problems naming the closest known one; keys of other Go server versions are warnings.

use std::path::PathBuf;

use toml::Table;

use super::Problem;
use super::keys;

/// Where configuration text comes from; tests pass their own environment.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The TOML file, if any.
    pub file: Option<PathBuf>,
    /// `(name, value)` pairs of the process environment.
    pub env: Vec<(String, String)>,
    /// `Key=Value` from `--set`.
    pub overrides: Vec<String>,
}

/// The sources merged: known keys under their canonical names, and what was wrong on the way.
#[derive(Debug, Default, Clone)]
pub struct Merged {
    /// Canonical key name → value; a key not here takes its default.
    pub table: Table,
    /// Problems, in the order found.
    pub problems: Vec<Problem>,
    /// Warnings (keys of other versions).
    pub warnings: Vec<String>,
    /// The file could not be read or parsed: its problem is the one to report, not what the
    /// key checks make of the empty table that stands in for it.
    pub file_failed: bool,
}

impl Merged {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(key, message));
    }
}

/// Reads the file and merges file < environment < `--set` into one table.
pub fn merge(sources: &Sources) -> Merged {
    let mut merged = Merged::default();
    if let Some(path) = &sources.file {
        let file = read_file(path, &mut merged);
        merge_file(file, &mut merged);
    }
    merge_env(&sources.env, &mut merged);
    merge_overrides(&sources.overrides, &mut merged);
    merged
}

fn read_file(path: &std::path::Path, merged: &mut Merged) -> Table {
    match std::fs::read_to_string(path) {
        Ok(text) => match text.parse::<Table>() {
            Ok(parsed) => return parsed,
            Err(e) => merged.problem("config", format!("{}: {e}", path.display())),
        },
        Err(e) => merged.problem("config", format!("cannot read {}: {e}", path.display())),
    }
    merged.file_failed = true;
    Table::new()
}

fn merge_file(file: Table, merged: &mut Merged) {
    for (name, value) in file {
        if let Some(key) = keys::by_name(&name) {
            merged.table.insert(key.name.to_string(), value);
        } else if let Some(key) = keys::by_name_ignoring_case(&name) {
            // prosody-filer writes `listenport`, `storeDir`: Go's TOML readers ignore case.
            if merged.table.contains_key(key.name) {
                merged.problem(&name, format!("given twice (also as `{}`)", key.name));
            } else {
                merged.table.insert(key.name.to_string(), value);
            }
        } else if keys::FOREIGN_KEYS.iter().any(|k| k.eq_ignore_ascii_case(&name)) {
            merged.warnings.push(format!(
                "{name}: used by other hmac-file-server versions, not by this one; ignored"
            ));
        } else {
            let hint = keys::closest(&name)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            merged.problem(&name, format!("unknown key{hint}"));
        }
    }
}

fn merge_env(env: &[(String, String)], merged: &mut Merged) {
    for (var, _) in env {
        if let Some(rest) = var.strip_prefix("HMAC_FILE_SERVER_")
            && keys::by_env_var(var).is_none()
        {
            let hint = keys::closest(&rest.replace('_', ""))
                .map(|k| format!("; did you mean {}?", keys::env_var_name(k)))
                .unwrap_or_default();
            merged.problem(var, format!("unknown environment variable{hint}"));
        }
    }
    // The standard variables of S3 tools, when nothing above names the key.
    let aws = [
        ("AWS_ACCESS_KEY_ID", &keys::S3_ACCESS_KEY_ID, None),
        (
            "AWS_SECRET_ACCESS_KEY",
            &keys::S3_SECRET_ACCESS_KEY,
            Some(&keys::S3_SECRET_ACCESS_KEY_FILE),
        ),
    ];
    for (var, key, unless) in aws {
        let named = |k: &keys::Key| merged.table.contains_key(k.name) || env.iter().any(|(v, _)| *v == k.env_var());
        if let Some((_, text)) = env.iter().find(|(k, _)| k == var)
            && !named(key)
            && !unless.is_some_and(named)
        {
            merged
                .table
                .insert(key.name.to_string(), toml::Value::String(text.clone()));
        }
    }
    for key in keys::KEYS {
        let var = key.env_var();
        if let Some((_, text)) = env.iter().find(|(k, _)| *k == var) {
            match key.kind.value_from_text(text) {
                Ok(v) => {
                    merged.table.insert(key.name.to_string(), v);
                }
                Err(e) => merged.problem(key.name, format!("from {var}: {e}")),
            }
        }
    }
}

fn merge_overrides(overrides: &[String], merged: &mut Merged) {
    for entry in overrides {
        let Some((name, text)) = entry.split_once('=') else {
            merged.problem("--set", format!("`{entry}` is not KEY=VALUE"));
            continue;
        };
        let name = name.trim();
        match keys::by_name(name) {
            Some(key) => match key.kind.value_from_text(text) {
                Ok(v) => {
                    merged.table.insert(key.name.to_string(), v);
                }
                Err(e) => merged.problem(name, format!("from --set: {e}")),
            },
            None => {
                let hint = keys::closest(name)
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
                merged.problem(name, format!("unknown key in --set{hint}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use toml::Value;

    fn merged(toml: &str, env: &[(&str, &str)], overrides: &[&str]) -> Merged {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        merge(&Sources {
            file: Some(file.path().to_path_buf()),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn later_sources_win_and_values_take_their_kind() {
        let m = merged(
            "maxuploadsize = 10\nUnixSocket = true\nRedisDB = 1",
            &[
                ("HMAC_FILE_SERVER_UNIX_SOCKET", "off"),
                ("HMAC_FILE_SERVER_REDIS_DB", "2"),
            ],
            &["RedisDB=3", "TrustedProxies=10.0.0.0/8, ::1"],
        );
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        assert_eq!(m.table["MaxUploadSize"], Value::Integer(10));
        assert_eq!(m.table["UnixSocket"], Value::Boolean(false));
        assert_eq!(m.table["RedisDB"], Value::Integer(3));
        assert_eq!(
            m.table["TrustedProxies"],
            Value::Array(vec!["10.0.0.0/8".into(), "::1".into()])
        );
    }

    #[test]
    fn bad_overrides_are_problems() {
        let m = merged("", &[("HMAC_FILE_SERVER_REDIS_DB", "x")], &["nokey", "MaxUploadSzie=1"]);
        let got: Vec<String> = m.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "RedisDB: from HMAC_FILE_SERVER_REDIS_DB: `x` is not a whole number",
                "--set: `nokey` is not KEY=VALUE",
                "MaxUploadSzie: unknown key in --set; did you mean `MaxUploadSize`?",
            ]
        );
    }

    #[test]
    fn no_file_is_no_problem() {
        let m = merge(&Sources::default());
        assert!(m.table.is_empty() && m.problems.is_empty() && m.warnings.is_empty());
        let m = merge(&Sources {
            file: Some("/nonexistent/hfs.toml".into()),
            ..Sources::default()
        });
        assert_eq!(m.problems[0].key, "config");
        assert!(m.problems[0].message.starts_with("cannot read /nonexistent/hfs.toml"));
    }
}
