//! Binding listeners: TCP from a [`ListenAddr`], or a Unix socket (stale socket replaced,
//! mode 0660, removed on exit).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use super::StartupError;
use crate::config::ListenAddr;

/// Binds `addr`. `":8080"` binds all interfaces, IPv6 and IPv4 where the system allows,
/// else IPv4 only.
pub async fn bind_tcp(addr: &ListenAddr) -> Result<TcpListener, StartupError> {
    let bind = |text: String| async move {
        TcpListener::bind(&text)
            .await
            .map_err(|source| StartupError::Bind { addr: text, source })
    };
    match addr {
        ListenAddr::AnyHost(port) => match bind(format!("[::]:{port}")).await {
            Ok(l) => Ok(l),
            Err(_) => bind(format!("0.0.0.0:{port}")).await,
        },
        ListenAddr::Socket(sa) => bind(sa.to_string()).await,
        ListenAddr::Host(host, port) => bind(format!("{host}:{port}")).await,
    }
}

/// A bound Unix socket that removes its file when dropped.
#[derive(Debug)]
pub struct UnixSocket {
    /// The listener.
    pub listener: UnixListener,
    path: PathBuf,
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds a Unix socket at `path`: a stale socket file is replaced; anything else at the path
/// is refused. The socket gets mode 0660 (owner and group, e.g. the web server's).
pub fn bind_unix(path: &Path) -> Result<UnixSocket, StartupError> {
    let fail = |message: String| StartupError::Bind {
        addr: path.display().to_string(),
        source: std::io::Error::other(message),
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
        }
        Ok(_) => {
            return Err(fail(
                "the path exists and is not a socket; refusing to replace it".into(),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let listener = UnixListener::bind(path).map_err(|source| StartupError::Bind {
        addr: path.display().to_string(),
        source,
    })?;
    let socket = UnixSocket {
        listener,
        path: path.to_path_buf(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| fail(format!("chmod: {e}")))?;
    Ok(socket)
}
