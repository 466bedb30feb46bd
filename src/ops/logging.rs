//! Logging with tracing: LogLevel, LogFile (appended to, reopened on SIGHUP for logrotate),
//! LogFormat `text` or `json`. The level can change on reload.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{Config, LogFormat};

/// Changes the running logger: level and log file.
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    file: Option<LogFile>,
    env_override: bool,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("file", &self.file.as_ref().map(|f| &f.path))
            .finish()
    }
}

impl LogHandle {
    /// Sets the level (ignored when RUST_LOG chose the filter).
    pub fn set_level(&self, level: &str) {
        if self.env_override {
            return;
        }
        if let Err(e) = self.filter.reload(filter_for(level)) {
            tracing::error!(error = %e, "cannot change the log level");
        }
    }

    /// Reopens the log file (after logrotate moved it).
    pub fn reopen(&self) {
        if let Some(file) = &self.file {
            match open_append(&file.path) {
                Ok(new) => {
                    *file.inner.lock().unwrap_or_else(|e| e.into_inner()) = new;
                    tracing::info!(path = %file.path.display(), "log file reopened");
                }
                Err(e) => tracing::error!(path = %file.path.display(), error = %e, "cannot reopen the log file"),
            }
        }
    }
}

/// A log file that can be swapped under the writer.
#[derive(Clone)]
struct LogFile {
    path: PathBuf,
    inner: Arc<Mutex<File>>,
}

struct LogFileWriter(Arc<Mutex<File>>);

impl Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(Arc::clone(&self.inner))
    }
}

fn filter_for(level: &str) -> EnvFilter {
    EnvFilter::new(format!("{level},hyper=warn,h2=warn"))
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Installs a plain subscriber to stderr at `level`, for the one-shot commands (LogFile and
/// LogFormat are the running server's).
pub fn init_stderr(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter_for(level))
        .with_writer(io::stderr)
        .with_target(false)
        .try_init();
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides LogLevel.
pub fn init(config: &Config) -> Result<LogHandle, String> {
    let env_filter = std::env::var("RUST_LOG").ok().and_then(|v| EnvFilter::try_new(v).ok());
    let env_override = env_filter.is_some();
    let (filter, handle) = reload::Layer::new(env_filter.unwrap_or_else(|| filter_for(&config.logging.level)));
    let file = match &config.logging.file {
        None => None,
        Some(path) => {
            let f = open_append(path).map_err(|e| format!("LogFile: cannot open {}: {e}", path.display()))?;
            Some(LogFile {
                path: path.clone(),
                inner: Arc::new(Mutex::new(f)),
            })
        }
    };
    let ansi = file.is_none() && io::stderr().is_terminal();
    let base = tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi);
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match (&file, config.logging.format) {
        (None, LogFormat::Text) => base.with_writer(io::stderr).boxed(),
        (None, LogFormat::Json) => base.json().with_writer(io::stderr).boxed(),
        (Some(f), LogFormat::Text) => base.with_writer(f.clone()).boxed(),
        (Some(f), LogFormat::Json) => base.json().with_writer(f.clone()).boxed(),
    };
    // The filter wraps the output layer, so the reload handle is typed over the bare Registry.
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(LogHandle {
        filter: handle,
        file,
        env_override,
    })
}
