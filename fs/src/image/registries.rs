//! registries.conf, read as podman reads it (v2 format): short-name
//! aliases, `unqualified-search-registries`, and `[[registry]]` entries
//! that move a prefix to another location, put mirrors in front of it
//! (a pull-through cache, a peer-to-peer mirror), mark it insecure (plain
//! HTTP or unchecked TLS), or block it.
//!
//! Files: `$CONTAINERS_REGISTRIES_CONF` if set; otherwise the user's
//! `~/.config/containers/registries.conf` if it exists, else
//! `/etc/containers/registries.conf`; then the `*.conf` files of the
//! matching `registries.conf.d` dirs, in name order, each adding to or
//! overriding what came before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::{names_registry, Reference};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    #[serde(default)]
    unqualified_search_registries: Option<Vec<String>>,
    #[serde(default)]
    registry: Vec<RegistryEntry>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
struct RegistryEntry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror: Vec<Mirror>,
    #[serde(default)]
    mirror_by_digest_only: bool,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
struct Mirror {
    location: String,
    #[serde(default)]
    insecure: bool,
}

/// One place to try for an image, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub reference: Reference,
    /// Plain HTTP (or TLS without verification) is allowed.
    pub insecure: bool,
    /// A mirror (a failure moves on to the next endpoint).
    pub mirror: bool,
}

/// The merged configuration.
#[derive(Debug, Clone, Default)]
pub struct Registries {
    search: Vec<String>,
    entries: Vec<RegistryEntry>,
    aliases: BTreeMap<String, String>,
    /// Files read, for messages.
    pub files: Vec<PathBuf>,
}

fn conf_d(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

impl Registries {
    /// Reads the files podman would read.
    pub fn load() -> Result<Registries, String> {
        let mut files = Vec::new();
        if let Some(p) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
            files.push(PathBuf::from(p));
        } else {
            let user = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
                .map(|c| c.join("containers"));
            let main = match &user {
                Some(u) if u.join("registries.conf").exists() => u.join("registries.conf"),
                _ => PathBuf::from("/etc/containers/registries.conf"),
            };
            files.push(main);
            files.extend(conf_d(Path::new("/etc/containers/registries.conf.d")));
            if let Some(u) = &user {
                files.extend(conf_d(&u.join("registries.conf.d")));
            }
        }
        let mut texts = Vec::new();
        for f in &files {
            if let Ok(t) = std::fs::read_to_string(f) {
                texts.push((f.clone(), t));
            }
        }
        Registries::from_texts(&texts)
    }

    /// Merges configuration texts, later ones over earlier ones.
    pub fn from_texts(texts: &[(PathBuf, String)]) -> Result<Registries, String> {
        let mut r = Registries::default();
        for (path, text) in texts {
            let f: File = toml::from_str(text).map_err(|e| {
                format!(
                    "{}: not a registries.conf rcfs can read: {e}",
                    path.display()
                )
            })?;
            if let Some(s) = f.unqualified_search_registries {
                r.search = s;
            }
            for mut e in f.registry {
                if e.prefix.is_empty() {
                    e.prefix = e.location.clone();
                }
                if e.location.is_empty() {
                    e.location = e.prefix.clone();
                }
                if e.prefix.is_empty() {
                    return Err(format!(
                        "{}: a [[registry]] has neither prefix nor location",
                        path.display()
                    ));
                }
                r.entries.retain(|old| old.prefix != e.prefix);
                r.entries.push(e);
            }
            r.aliases.extend(f.aliases);
            r.files.push(path.clone());
        }
        Ok(r)
    }

    /// The fully qualified names a user's name may mean, in the order to
    /// try them: itself if qualified; else its alias; else the name in each
    /// search registry (`docker.io` when none is configured).
    pub fn candidates(&self, name: &str) -> Result<Vec<Reference>, String> {
        let bare = name.strip_prefix("docker://").unwrap_or(name);
        let qualified = bare
            .split_once('/')
            .is_some_and(|(first, _)| names_registry(first));
        if qualified {
            return Reference::parse(bare, "docker.io")
                .map(|r| vec![r])
                .map_err(|e| e.to_string());
        }
        // Aliases are keyed by the name without tag or digest.
        let (base, suffix) = match bare.find(['@', ':']) {
            Some(i) => (&bare[..i], &bare[i..]),
            None => (bare, ""),
        };
        if let Some(target) = self.aliases.get(base) {
            let full = if suffix.is_empty() || target.contains(['@']) {
                target.clone()
            } else {
                format!("{target}{suffix}")
            };
            return Reference::parse(&full, "docker.io")
                .map(|r| vec![r])
                .map_err(|e| e.to_string());
        }
        let search = if self.search.is_empty() {
            vec!["docker.io".to_owned()]
        } else {
            self.search.clone()
        };
        search
            .iter()
            .map(|reg| Reference::parse(bare, reg).map_err(|e| e.to_string()))
            .collect()
    }

    /// Where to fetch `r` from: its mirrors, then its own (possibly moved)
    /// location. An error when the registry is blocked.
    pub fn endpoints(
        &self,
        r: &Reference,
        insecure_default: bool,
    ) -> Result<Vec<Endpoint>, String> {
        let full = format!("{}/{}", r.registry, r.repository);
        let entry = self
            .entries
            .iter()
            .filter(|e| {
                full == e.prefix
                    || full.starts_with(&format!("{}/", e.prefix))
                    || e.prefix == r.registry
            })
            .max_by_key(|e| e.prefix.len());
        let Some(e) = entry else {
            return Ok(vec![Endpoint {
                reference: r.clone(),
                insecure: insecure_default,
                mirror: false,
            }]);
        };
        if e.blocked {
            return Err(format!(
                "registry {} is blocked in registries.conf",
                e.prefix
            ));
        }
        let rest = &full[e.prefix.len()..];
        let moved = |location: &str| -> Result<Reference, String> {
            let mut s = format!("{location}{rest}");
            if let Some(t) = &r.tag {
                s = format!("{s}:{t}");
            }
            if let Some(d) = &r.digest {
                s = format!("{s}@{d}");
            }
            Reference::parse(&s, "docker.io").map_err(|e| e.to_string())
        };
        let mut v = Vec::new();
        if !e.mirror_by_digest_only || r.digest.is_some() {
            for m in &e.mirror {
                v.push(Endpoint {
                    reference: moved(&m.location)?,
                    insecure: m.insecure,
                    mirror: true,
                });
            }
        }
        v.push(Endpoint {
            reference: moved(&e.location)?,
            insecure: e.insecure || insecure_default,
            mirror: false,
        });
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Registries {
        Registries::from_texts(&[("/etc/containers/registries.conf".into(), text.into())]).unwrap()
    }

    #[test]
    fn short_names_aliases_mirrors_and_blocks() {
        let r = conf(
            r#"
unqualified-search-registries = ["quay.io", "docker.io"]
[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5001/hub"
insecure = true
[[registry]]
location = "evil.example"
blocked = true
[[registry]]
prefix = "example.com/team"
location = "internal.example/mirror/team"
"#,
        );
        let c = r.candidates("debian:12").unwrap();
        assert_eq!(
            c.iter().map(|r| r.canonical()).collect::<Vec<_>>(),
            ["quay.io/debian:12", "docker.io/library/debian:12"]
        );
        assert_eq!(
            r.candidates("fedora:40").unwrap()[0].canonical(),
            "registry.fedoraproject.org/fedora:40"
        );
        assert_eq!(r.candidates("localhost:5000/x").unwrap().len(), 1);

        let hub = Reference::parse("debian:12", "docker.io").unwrap();
        let e = r.endpoints(&hub, false).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (
                e[0].reference.canonical().as_str(),
                e[0].insecure,
                e[0].mirror
            ),
            ("127.0.0.1:5001/hub/library/debian:12", true, true)
        );
        assert_eq!(e[1].reference.canonical(), "docker.io/library/debian:12");
        assert!(r
            .endpoints(
                &Reference::parse("evil.example/x", "docker.io").unwrap(),
                false
            )
            .unwrap_err()
            .contains("blocked"));
        let moved = r
            .endpoints(
                &Reference::parse("example.com/team/app:1", "docker.io").unwrap(),
                false,
            )
            .unwrap();
        assert_eq!(
            moved[0].reference.canonical(),
            "internal.example/mirror/team/app:1"
        );
        let plain = r
            .endpoints(
                &Reference::parse("other.io/app", "docker.io").unwrap(),
                true,
            )
            .unwrap();
        assert_eq!((plain.len(), plain[0].insecure), (1, true));
        // No configuration: Docker Hub.
        let none = Registries::default();
        assert_eq!(
            none.candidates("alpine").unwrap()[0].canonical(),
            "docker.io/library/alpine:latest"
        );
        assert!(
            Registries::from_texts(&[("x".into(), "[[registry]]\ninsecure = true".into())])
                .is_err()
        );
    }
}
