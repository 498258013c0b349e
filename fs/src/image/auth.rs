//! Registry credentials, read where podman and docker keep them:
//! `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, `~/.docker/config.json`; the first
//! file with an entry for the registry (or for a repository prefix of the
//! image, the longest one) wins.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

/// A user name and password (or identity token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.user)
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// The auth files to look in, in order.
pub fn auth_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        v.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(Path::new(&p).join("containers/auth.json"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let home = Path::new(&home);
        v.push(home.join(".config/containers/auth.json"));
        v.push(home.join(".docker/config.json"));
    }
    v
}

/// A key of an auth file as `host[/path]`: without a scheme and Docker
/// Hub's legacy spellings made `docker.io`.
fn normalize_key(k: &str) -> String {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        k => k.to_owned(),
    }
}

/// Credentials for `registry/repository` from `files`.
pub fn lookup(files: &[PathBuf], registry: &str, repository: &str) -> Option<Credentials> {
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        match lookup_in(&text, registry, repository) {
            Ok(Some(c)) => return Some(c),
            Ok(None) => {}
            Err(e) => log::warn!("ignoring {}: {e}", f.display()),
        }
    }
    None
}

/// The credentials the auth file `text` holds for `registry/repository`
/// (its longest matching entry), or an error if it is no auth file.
pub fn lookup_in(
    text: &str,
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>, serde_json::Error> {
    let full = format!("{registry}/{repository}");
    let parsed: AuthFile = serde_json::from_str(text)?;
    let best = parsed
        .auths
        .iter()
        .map(|(k, e)| (normalize_key(k), e))
        .filter(|(k, _)| full == *k || full.starts_with(&format!("{k}/")))
        .max_by_key(|(k, _)| k.len());
    let Some((_, e)) = best else { return Ok(None) };
    if !e.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(e.auth.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok());
        return Ok(decoded.and_then(|s| {
            let (u, p) = s.split_once(':')?;
            Some(Credentials {
                user: u.into(),
                password: p.into(),
            })
        }));
    }
    if !e.username.is_empty() {
        return Ok(Some(Credentials {
            user: e.username.clone(),
            password: e.password.clone(),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_longest_matching_entry_in_the_first_file_that_has_one() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a.json");
        let b = t.path().join("b.json");
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &a,
            format!(
                r#"{{"auths": {{"other.io": {{"auth": "{}"}}}}}}"#,
                enc("x:y")
            ),
        )
        .unwrap();
        std::fs::write(
            &b,
            format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}},
                    "quay.io": {{"auth": "{}"}}, "quay.io/team": {{"auth": "{}"}}}}}}"#,
                enc("hub:pw"),
                enc("q:1"),
                enc("team:2:with:colons")
            ),
        )
        .unwrap();
        let files = vec![t.path().join("missing.json"), a, b];
        assert_eq!(
            lookup(&files, "docker.io", "library/debian").unwrap().user,
            "hub"
        );
        assert_eq!(lookup(&files, "quay.io", "x/y").unwrap().user, "q");
        let c = lookup(&files, "quay.io", "team/app").unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("team", "2:with:colons")
        );
        assert_eq!(lookup(&files, "other.io", "r").unwrap().password, "y");
        assert!(lookup(&files, "127.0.0.1:5000", "r").is_none());
        assert!(!format!("{:?}", lookup(&files, "other.io", "r").unwrap()).contains('y'));
    }
}
