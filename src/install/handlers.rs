//! `[handlers]`: system-info, pre-install and post-install executables.

use std::path::Path;
use std::process::Command;

use super::InstallError;

/// Runs the system-info handler, which prints `KEY=value` lines; the pairs
/// are passed on to the other handlers' environment.
pub fn system_info(path: &Path) -> Result<Vec<(String, String)>, InstallError> {
    let out = run("system-info", path, &[])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Runs a handler with `env` added; fails with its stderr if it exits non-zero.
pub fn run(
    handler: &'static str,
    path: &Path,
    env: &[(String, String)],
) -> Result<String, InstallError> {
    log::info!("running {handler} handler {}", path.display());
    let out = Command::new(path)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|e| InstallError::Handler {
            handler,
            path: path.to_owned(),
            status: "could not start".into(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(InstallError::Handler {
            handler,
            path: path.to_owned(),
            status: out.status.to_string(),
            stderr: stderr.trim().chars().take(2000).collect(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
