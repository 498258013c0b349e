//! Image names as users type them, and where they point.
//!
//! * `[docker://]REGISTRY/REPO[:TAG][@sha256:...]`, with Docker's rules: a
//!   first component with a `.` or `:`, or `localhost`, is a registry;
//!   otherwise the name is short, and registries.conf decides (aliases,
//!   then `unqualified-search-registries`; `docker.io` when none is set),
//!   with `library/` added for one-component names on Docker Hub.
//! * `oci:DIR[:TAG]` — an OCI image layout directory (as skopeo writes).
//! * `docker-archive:FILE` — a `docker save` tarball.

use std::fmt;
use std::path::PathBuf;

use super::digest::Digest;

/// A name in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// As named (`docker.io`, `127.0.0.1:5000`, `quay.io`).
    pub registry: String,
    /// `library/debian`, `team/app`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Registry(Reference),
    OciLayout { dir: PathBuf, tag: Option<String> },
    DockerArchive { file: PathBuf },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Registry(r) => write!(f, "{r}"),
            Source::OciLayout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            Source::OciLayout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            Source::DockerArchive { file } => write!(f, "docker-archive:{}", file.display()),
        }
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReference(pub String);

impl fmt::Display for BadReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadReference {}

fn bad<T>(s: &str, why: &str) -> Result<T, BadReference> {
    Err(BadReference(format!(
        "'{s}' is not an image name rcfs understands: {why}"
    )))
}

/// Whether the first component of a name is a registry.
pub fn names_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn valid_repo_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Reference {
    /// Parses a registry name. A short name (no registry) gets
    /// `default_registry`.
    pub fn parse(s: &str, default_registry: &str) -> Result<Reference, BadReference> {
        let s0 = s;
        let s = s.strip_prefix("docker://").unwrap_or(s);
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => match Digest::parse(d) {
                Ok(d) => (r, Some(d)),
                Err(e) => return bad(s0, &e.to_string()),
            },
            None => (s, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_owned())),
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return bad(s0, &format!("'{t}' is not a valid tag"));
            }
        }
        let (registry, repo) = match name.split_once('/') {
            Some((first, repo)) if names_registry(first) => (first.to_owned(), repo.to_owned()),
            _ => (default_registry.to_owned(), name.to_owned()),
        };
        if registry.is_empty() || registry.contains(|c: char| c.is_whitespace() || c == '@') {
            return bad(s0, "bad registry");
        }
        let repository = if registry == "docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        if !repository.split('/').all(valid_repo_component) {
            return bad(
                s0,
                "a repository is lowercase letters, digits and . _ - between slashes",
            );
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host the API is served from.
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest if given, else the tag
    /// (`latest` when none).
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// The name under which rcfs lists the image: with `:latest` when it
    /// has neither tag nor digest.
    pub fn canonical(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        match (&self.tag, &self.digest) {
            (Some(t), _) => {
                s.push(':');
                s.push_str(t);
            }
            (None, None) => s.push_str(":latest"),
            _ => {}
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl Source {
    /// Parses what a user typed. `resolve_short` turns a short registry
    /// name into candidates (registries.conf); it is not called for
    /// fully qualified names.
    pub fn parse(s: &str, default_registry: &str) -> Result<Source, BadReference> {
        if let Some(rest) = s.strip_prefix("oci:") {
            if rest.is_empty() {
                return bad(s, "oci: needs a directory (oci:DIR[:TAG])");
            }
            // A tag follows the last ':' unless that ':' is part of a path.
            return Ok(match rest.rsplit_once(':') {
                Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => Source::OciLayout {
                    dir: dir.into(),
                    tag: Some(tag.to_owned()),
                },
                _ => Source::OciLayout {
                    dir: rest.into(),
                    tag: None,
                },
            });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            if rest.is_empty() {
                return bad(s, "docker-archive: needs a file");
            }
            return Ok(Source::DockerArchive { file: rest.into() });
        }
        Reference::parse(s, default_registry).map(Source::Registry)
    }
}

/// Whether `s` names a registry image without a registry (a short name).
pub fn is_short_name(s: &str) -> bool {
    let s = s.strip_prefix("docker://").unwrap_or(s);
    if s.starts_with("oci:") || s.starts_with("docker-archive:") {
        return false;
    }
    match s.split_once('/') {
        Some((first, _)) => !names_registry(first),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_as_docker_does() {
        let r = Reference::parse("debian", "docker.io").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/debian", None)
        );
        assert_eq!(r.canonical(), "docker.io/library/debian:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = Reference::parse("127.0.0.1:5000/demo/app:v1.2", "docker.io").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "demo/app", Some("v1.2"))
        );
        assert_eq!(r.manifest_ref(), "v1.2");
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("localhost/app@{d}"), "docker.io").unwrap();
        assert_eq!((r.registry.as_str(), r.digest), ("localhost", Some(d)));
        assert_eq!(r.manifest_ref(), d.to_string());
        let r = Reference::parse("docker://quay.io/a/b:t", "docker.io").unwrap();
        assert_eq!(r.canonical(), "quay.io/a/b:t");
        for bad in [
            "UPPER/case",
            "a//b",
            "x:bad tag",
            "reg.io/app@sha256:12",
            "-a",
            "",
        ] {
            assert!(Reference::parse(bad, "docker.io").is_err(), "{bad}");
        }
        assert!(is_short_name("debian:12") && is_short_name("team/app"));
        assert!(!is_short_name("localhost:5000/app") && !is_short_name("oci:/x"));
    }

    #[test]
    fn parses_transports() {
        assert_eq!(
            Source::parse("oci:/tmp/lay:v1", "docker.io").unwrap(),
            Source::OciLayout {
                dir: "/tmp/lay".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Source::parse("oci:/tmp/lay", "docker.io").unwrap(),
            Source::OciLayout {
                dir: "/tmp/lay".into(),
                tag: None
            }
        );
        assert_eq!(
            Source::parse("docker-archive:/tmp/a.tar", "docker.io").unwrap(),
            Source::DockerArchive {
                file: "/tmp/a.tar".into()
            }
        );
        assert!(Source::parse("oci:", "docker.io").is_err());
    }
}
