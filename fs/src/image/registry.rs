//! An OCI distribution (v2) registry client: manifests by tag or digest,
//! blobs whole or by range, anonymous bearer tokens or credentials, retries
//! with backoff on 5xx, 429 and broken connections, redirects to blob
//! storage (without our credentials), HTTPS checked against the system's CA
//! certificates, plain HTTP for insecure (loopback) registries.
//!
//! What a registry sends is bounded: a manifest or index is at most
//! [`MAX_MANIFEST`] bytes, a token answer [`MAX_TOKEN`]; a range of a blob
//! is read for exactly the bytes asked for, never past them (a body that
//! goes on, or never ends, costs its connection, not a wait); and every
//! request but a whole blob's stream (which may take as long as it keeps
//! moving) has an overall deadline, [`deadline_for`], retries included.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use parking_lot::Mutex as PlMutex;

use super::auth::Credentials;
use super::blob::BlobSource;
use super::digest::Digest;
use super::reference::Reference;
pub use http::timed_out;
use http::{
    challenge_params, content_range, err, is_plain_http, is_timeout, transient, url_encode, Exact,
};

/// Manifest media types rcfs asks for, best first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest or index read (containers/image's limit, the
/// docker registry's own; a manifest is a few KB).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// The largest token answer read (containers/image's limit).
pub const MAX_TOKEN: u64 = 1 << 20;

/// The deadline of a request, retries included, for up to 1 MiB: the
/// time it may take to answer, plus [`deadline_for`]'s allowance for more.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// How long a request for `bytes` may take in all, retries included, with
/// `base` for the first MiB ([`REQUEST_DEADLINE`] unless a test says
/// otherwise): plus a second for each further MiB (the slowest link served
/// is 1 MiB/s past the first 30 s): 34 s for the 4 MiB a lazy read asks for
/// at most, 94 s for the largest chunk (64 MiB), 34 s for a manifest.
pub fn deadline_for(base: Duration, bytes: u64) -> Duration {
    base + Duration::from_secs(bytes >> 20)
}

/// How a client behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Plain HTTP (and no TLS checks): `--tls-verify=false`.
    pub insecure: bool,
    pub credentials: Option<Credentials>,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// The first retry's delay; each next one doubles, up to 8 s.
    pub backoff: Duration,
    /// The deadline of a request of up to 1 MiB (see [`deadline_for`]).
    pub deadline: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: false,
            credentials: None,
            attempts: 5,
            backoff: Duration::from_millis(250),
            deadline: REQUEST_DEADLINE,
        }
    }
}

/// A client for one repository.
#[derive(Debug)]
pub struct Registry {
    agent: ureq::Agent,
    /// `https://host` or `http://host`.
    base: String,
    repository: String,
    /// For messages: `host/repository`.
    name: String,
    opts: ClientOptions,
    /// The `Authorization` header value that last worked (a bearer token or
    /// basic credentials); taken alone.
    authorization: PlMutex<Option<String>>,
}

type Response = ureq::http::Response<ureq::Body>;

/// The requests rcfs makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
    Put,
}

/// What a request sends.
enum ReqBody<'a> {
    None,
    Bytes(&'a [u8]),
    File(&'a File),
}

impl Registry {
    /// A client for `r`'s repository.
    pub fn new(r: &Reference, opts: ClientOptions) -> Registry {
        let tls = if opts.insecure {
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build()
        } else {
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build()
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .max_redirects(8)
            // Lazy reads keep several requests in flight (the fetch pool):
            // keep their connections, a new one costs round trips.
            .max_idle_connections(64)
            .max_idle_connections_per_host(32)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("rcfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let scheme = if opts.insecure { "http" } else { "https" };
        Registry {
            agent,
            base: format!("{scheme}://{}", r.api_host()),
            repository: r.repository.clone(),
            name: format!("{}/{}", r.registry, r.repository),
            opts,
            authorization: PlMutex::new(None),
        }
    }

    /// One GET with authentication and retries, all done by `deadline`
    /// (reading the body included); the response of the last attempt,
    /// whatever its status, or a transport error.
    fn get(
        &self,
        url: &str,
        headers: &[(&str, String)],
        deadline: Option<Instant>,
    ) -> io::Result<Response> {
        self.call(Method::Get, url, headers, ReqBody::None, deadline)
    }

    /// One request with authentication and retries (a file body is sent
    /// again from its start), all done by `deadline` if there is one.
    fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: ReqBody<'_>,
        deadline: Option<Instant>,
    ) -> io::Result<Response> {
        let mut delay = self.opts.backoff;
        let mut tried_auth = false;
        let mut attempt = 0;
        let late = |attempt: u32, e: &dyn std::fmt::Display| {
            timed_out(format!(
                "registry {} did not answer {url} within rcfs's deadline ({e}, {attempt} attempt{})",
                self.base,
                if attempt == 1 { "" } else { "s" }
            ))
        };
        loop {
            attempt += 1;
            let mut auth_headers: Vec<(&str, String)> = headers.to_vec();
            if let Some(a) = self.authorization.lock().clone() {
                auth_headers.push(("Authorization", a));
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Err(late(attempt - 1, &"no time left")),
                },
                None => None,
            };
            let res = self.once(method, url, &auth_headers, &body, left);
            let retry_after;
            match res {
                Ok(resp) if resp.status() == 401 && !tried_auth => {
                    tried_auth = true;
                    attempt -= 1;
                    let challenge = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    self.authenticate(&challenge, deadline)?;
                    continue;
                }
                Ok(resp) if transient(resp.status().as_u16()) && attempt < self.opts.attempts => {
                    retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(30)));
                    log::info!("{url}: {} — trying again", resp.status());
                }
                Ok(resp) => return Ok(resp),
                Err(e) if is_plain_http(&e) => {
                    return Err(err(format!(
                        "cannot reach registry {}: it answered the TLS handshake in plain HTTP. \
                         For a registry without TLS (one on loopback, say) pass \
                         --tls-verify=false, or mark it `insecure = true` in registries.conf",
                        self.base
                    )))
                }
                Err(e) if attempt < self.opts.attempts && !matches!(e, ureq::Error::BadUri(_)) => {
                    log::info!("{url}: {e} — trying again");
                    retry_after = None;
                }
                Err(e) if deadline.is_some() && is_timeout(&e) => return Err(late(attempt, &e)),
                Err(e) => {
                    return Err(err(format!(
                        "cannot reach registry {} ({e}){}",
                        self.base,
                        if attempt > 1 {
                            format!(" after {attempt} attempts")
                        } else {
                            String::new()
                        }
                    )))
                }
            }
            let pause = retry_after.unwrap_or(delay);
            if deadline.is_some_and(|d| Instant::now() + pause >= d) {
                return Err(late(attempt, &"no time left to try again"));
            }
            std::thread::sleep(pause);
            delay = (delay * 2).min(Duration::from_secs(8));
        }
    }

    /// One attempt, which must be done (its body read too) within
    /// `timeout`.
    fn once(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: &ReqBody<'_>,
        timeout: Option<Duration>,
    ) -> Result<Response, ureq::Error> {
        macro_rules! with_headers {
            ($req:expr) => {{
                let mut r = $req;
                for (k, v) in headers {
                    r = r.header(*k, v);
                }
                if timeout.is_some() {
                    r = r.config().timeout_global(timeout).build();
                }
                r
            }};
        }
        match method {
            Method::Get => with_headers!(self.agent.get(url)).call(),
            Method::Head => with_headers!(self.agent.head(url)).call(),
            Method::Post | Method::Put => {
                let req = if method == Method::Post {
                    self.agent.post(url)
                } else {
                    self.agent.put(url)
                };
                let req = with_headers!(req);
                match body {
                    ReqBody::None => req.send_empty(),
                    ReqBody::Bytes(b) => req.send(*b),
                    ReqBody::File(f) => {
                        let mut f: &File = f;
                        f.seek(io::SeekFrom::Start(0)).map_err(ureq::Error::Io)?;
                        req.send(f)
                    }
                }
            }
        }
    }

    /// Answers a 401 challenge: a bearer token from the realm (with our
    /// credentials if we have some), or basic credentials.
    fn authenticate(&self, challenge: &str, deadline: Option<Instant>) -> io::Result<()> {
        let basic = self.opts.credentials.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.user, c.password))
            )
        });
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let Some(b) = basic else {
                return Err(err(format!(
                    "registry {} wants a user name and password: log in with `podman login` or `docker login` (rcfs reads their auth files)",
                    self.base
                )));
            };
            *self.authorization.lock() = Some(b);
            return Ok(());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(err(format!(
                "registry {} asks for authentication rcfs does not speak: '{challenge}'",
                self.base
            )));
        }
        let params = challenge_params(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let realm = get("realm").ok_or_else(|| {
            err(format!(
                "registry {}: a bearer challenge without a realm",
                self.base
            ))
        })?;
        let mut url = format!("{realm}?");
        if let Some(s) = get("service") {
            url.push_str(&format!("service={}&", url_encode(&s)));
        }
        let scope = get("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        url.push_str(&format!("scope={}", url_encode(&scope)));
        let left = deadline
            .map_or(self.opts.deadline, |d| {
                d.saturating_duration_since(Instant::now())
            })
            .max(Duration::from_millis(1));
        let mut req = self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(left))
            .build();
        if let Some(b) = &basic {
            req = req.header("Authorization", b);
        }
        let mut resp = req
            .call()
            .map_err(|e| err(format!("cannot get a token from {realm}: {e}")))?;
        if resp.status() != 200 {
            return Err(err(format!(
                "{realm} refused a token for {} ({}){}",
                self.name,
                resp.status(),
                if basic.is_none() {
                    "; if the image is private, log in with `podman login`"
                } else {
                    "; check your credentials"
                }
            )));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let t: Token = serde_json::from_slice(
            &resp
                .body_mut()
                .with_config()
                .limit(MAX_TOKEN)
                .read_to_vec()
                .map_err(|e| {
                    err(format!(
                        "{realm}: {e} (a token answer is at most {MAX_TOKEN} bytes)"
                    ))
                })?,
        )
        .map_err(|e| err(format!("{realm}: not a token answer: {e}")))?;
        let token = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        *self.authorization.lock() = Some(format!("Bearer {token}"));
        Ok(())
    }

    /// Turns a non-success status into a clear error.
    fn status_error(&self, what: &str, resp: &mut Response) -> io::Error {
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        let detail: String = body.chars().take(300).collect();
        let hint = match status.as_u16() {
            404 => " (no such image, tag or blob)",
            401 | 403 => " (not allowed: log in with `podman login`, or check the name)",
            429 => " (rate limited; try again later)",
            s if s >= 500 => " (the registry failed; try again later)",
            _ => "",
        };
        err(
            format!("{what} from {}: {status}{hint} {detail}", self.name)
                .trim_end()
                .to_owned(),
        )
    }

    /// The manifest `reference` (tag or digest): its bytes and media type.
    /// A manifest asked for by digest is checked against it.
    pub fn manifest(&self, reference: &str) -> io::Result<(Vec<u8>, String)> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.repository);
        let deadline = Instant::now() + deadline_for(self.opts.deadline, MAX_MANIFEST);
        let mut resp = self.get(
            &url,
            &[("Accept", MANIFEST_ACCEPT.to_owned())],
            Some(deadline),
        )?;
        if resp.status() != 200 {
            return Err(self.status_error(&format!("manifest {reference}"), &mut resp));
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let too_big = || {
            err(format!(
                "manifest {reference} from {} is larger than {} MiB, rcfs's limit for a \
                 manifest or index (as containers/image's); refusing it",
                self.name,
                MAX_MANIFEST >> 20
            ))
        };
        if resp
            .body()
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST)
        {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        Exact {
            inner: resp.into_body().into_reader(),
            left: MAX_MANIFEST + 1,
            reusable: false,
            what: format!("manifest {reference} from {}", self.name),
        }
        .read_to_end(&mut bytes)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                e
            } else {
                err(format!("manifest {reference} from {}: {e}", self.name))
            }
        })?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(too_big());
        }
        if let Ok(d) = Digest::parse(reference) {
            if Digest::of(&bytes) != d {
                return Err(err(format!(
                    "manifest {reference} from {} does not match its digest",
                    self.name
                )));
            }
        }
        Ok((bytes, media_type))
    }

    /// Blob `d`, from byte `start` to `end` (the whole blob for `None`).
    /// A range is read for exactly its bytes (see [`Exact`]) and must
    /// arrive within [`deadline_for`] its length; a whole blob is bounded
    /// by its Content-Length (ureq holds the server to it), and its reader
    /// by what it reads.
    pub fn blob(&self, d: &Digest, range: Option<(u64, u64)>) -> io::Result<Box<dyn Read + Send>> {
        let url = format!("{}/v2/{}/blobs/{d}", self.base, self.repository);
        let mut headers = Vec::new();
        let mut deadline = None;
        if let Some((s, e)) = range {
            if s >= e {
                return Err(err(format!(
                    "blob {}: an empty or inverted range {s}..{e}",
                    d.short()
                )));
            }
            headers.push(("Range", format!("bytes={s}-{}", e - 1)));
            deadline = Some(Instant::now() + deadline_for(self.opts.deadline, e - s));
        }
        let mut resp = self.get(&url, &headers, deadline)?;
        let Some((s, e)) = range else {
            if resp.status().as_u16() != 200 {
                return Err(self.status_error(&format!("blob {}", d.short()), &mut resp));
            }
            return Ok(Box::new(resp.into_body().into_reader()));
        };
        let what = format!(
            "bytes {s}..{e} of blob {} from {} (deadline {}s)",
            d.short(),
            self.name,
            deadline_for(self.opts.deadline, e - s).as_secs()
        );
        let len = resp.body().content_length();
        match resp.status().as_u16() {
            206 => {
                let answered = resp.headers().get("content-range");
                if let Some(v) = answered.map(|v| v.to_str().unwrap_or("?")) {
                    if content_range(v) != Some((s, e)) {
                        return Err(err(format!(
                            "{what}: the registry answered with range '{v}'"
                        )));
                    }
                }
                Ok(Box::new(Exact {
                    inner: resp.into_body().into_reader(),
                    left: e - s,
                    reusable: len == Some(e - s),
                    what,
                }))
            }
            // A server that ignores ranges: skip to the start.
            200 => {
                let mut r = Exact {
                    inner: resp.into_body().into_reader(),
                    left: e,
                    reusable: false,
                    what,
                };
                let skipped = io::copy(&mut (&mut r).take(s), &mut io::sink())?;
                if skipped != s {
                    return Err(err(format!("{}: the blob ended at {skipped}", r.what)));
                }
                Ok(Box::new(r))
            }
            _ => Err(self.status_error(&format!("blob {}", d.short()), &mut resp)),
        }
    }

    /// Whether the repository has blob `d`.
    pub fn has_blob(&self, d: &Digest) -> io::Result<bool> {
        let url = format!("{}/v2/{}/blobs/{d}", self.base, self.repository);
        let deadline = Instant::now() + self.opts.deadline;
        let mut resp = self.call(Method::Head, &url, &[], ReqBody::None, Some(deadline))?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(&format!("checking blob {}", d.short()), &mut resp)),
        }
    }

    /// Makes blob `d`, which repository `from` of the same registry has,
    /// part of this repository without sending it; false when the registry
    /// did not (the caller then uploads it).
    pub fn mount_blob(&self, d: &Digest, from: &str) -> io::Result<bool> {
        let url = format!(
            "{}/v2/{}/blobs/uploads/?mount={d}&from={from}",
            self.base, self.repository
        );
        let resp = self.call(Method::Post, &url, &[], ReqBody::None, None)?;
        Ok(resp.status().as_u16() == 201)
    }

    /// Uploads blob `d` from `file` (one monolithic PUT).
    pub fn upload_blob(&self, d: &Digest, file: &File) -> io::Result<()> {
        let url = format!("{}/v2/{}/blobs/uploads/", self.base, self.repository);
        let mut resp = self.call(Method::Post, &url, &[], ReqBody::None, None)?;
        if resp.status().as_u16() != 202 {
            return Err(self.status_error("starting an upload", &mut resp));
        }
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| err(format!("{}: the upload answer has no Location", self.name)))?
            .to_owned();
        // The location may be relative, and may already have a query.
        let loc = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let url = format!("{loc}{sep}digest={d}");
        let len = file.metadata()?.len();
        let headers = [
            ("Content-Type", "application/octet-stream".to_owned()),
            ("Content-Length", len.to_string()),
        ];
        let mut resp = self.call(Method::Put, &url, &headers, ReqBody::File(file), None)?;
        if resp.status().as_u16() != 201 {
            return Err(self.status_error(&format!("uploading blob {}", d.short()), &mut resp));
        }
        Ok(())
    }

    /// Stores manifest `bytes` (of `media_type`) as `reference`.
    pub fn put_manifest(&self, reference: &str, bytes: &[u8], media_type: &str) -> io::Result<()> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.repository);
        let headers = [("Content-Type", media_type.to_owned())];
        let mut resp = self.call(Method::Put, &url, &headers, ReqBody::Bytes(bytes), None)?;
        if resp.status().as_u16() != 201 {
            return Err(self.status_error(&format!("storing manifest {reference}"), &mut resp));
        }
        Ok(())
    }

    /// For messages: `host/repository`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One blob of a registry, read by range (an image layer's lazy source).
#[derive(Debug)]
pub struct RegistryBlob {
    pub registry: Arc<Registry>,
    pub digest: Digest,
}

impl BlobSource for RegistryBlob {
    fn open_range(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + Send>> {
        let t0 = Instant::now();
        let r = self.registry.blob(&self.digest, Some((start, end)));
        log::debug!(
            "range {start}..{end} of {} from {}: {:?}",
            self.digest.short(),
            self.registry.name,
            t0.elapsed()
        );
        r
    }

    fn describe(&self) -> String {
        format!("blob {} of {}", self.digest.short(), self.registry.name)
    }
}

mod http;
#[cfg(test)]
mod tests;
