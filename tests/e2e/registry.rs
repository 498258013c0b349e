//! Fixtures for image tests: OCI images built here (busybox-static plus
//! generated files, several layers with whiteouts, an opaque dir and hard
//! links), a real registry on loopback (Debian's `docker-registry`), images
//! pushed to it with `skopeo` as gzip, zstd or zstd:chunked, manifests
//! written by hand through its HTTP API, and a proxy in front of it that
//! can inject faults (resets, 5xx answers, flipped bytes, one blob served
//! for another, bodies that never end or never come, oversize manifests).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcfs_fs::image::digest::Digest;

use crate::mounts::{cmd, run};

/// One entry of a layer.
#[derive(Clone, Debug)]
pub enum Item {
    File(&'static str, Vec<u8>, u32),
    Dir(&'static str, u32),
    Symlink(&'static str, &'static str),
    HardLink(&'static str, &'static str),
}

/// A layer as a plain tar.
pub fn tar_layer(items: &[Item]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for it in items {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match it {
            Item::File(name, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, &data[..]).unwrap();
            }
            Item::Dir(name, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            Item::Symlink(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, name, target).unwrap();
            }
            Item::HardLink(name, target) => {
                // As tar and podman write them: the target's mode (podman
                // applies a link header's mode to the shared file).
                let mode = items.iter().find_map(|i| match i {
                    Item::File(n, _, m) if n == target => Some(*m),
                    _ => None,
                });
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(mode.unwrap_or(0o644));
                h.set_size(0);
                b.append_link(&mut h, name, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Bytes that do not compress much (so chunking and lazy fetching show).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The standard test image: a base layer with busybox and generated files
/// (a large file, many small ones, hard links, symlinks), and a top layer
/// with a whiteout, an opaque dir, a changed file and new files. `seed`
/// makes the content unique (so no tool can reuse another test's blobs).
pub fn standard_layers(seed: u64) -> Vec<Vec<u8>> {
    let busybox =
        std::fs::read("/bin/busybox").expect("busybox-static is installed (/bin/busybox)");
    let mut base = vec![
        Item::Dir("bin", 0o755),
        Item::File("bin/busybox", busybox, 0o755),
        Item::Symlink("bin/sh", "busybox"),
        Item::Symlink("bin/cat", "/bin/busybox"),
        Item::Dir("etc", 0o755),
        Item::File("etc/hostname", format!("base {seed}\n").into_bytes(), 0o644),
        Item::Dir("usr/share/data", 0o755),
        Item::File("usr/share/data/big.bin", noise(6 << 20, seed), 0o644),
        Item::Dir("opaque", 0o700),
        Item::File(
            "opaque/hidden",
            b"hidden by the top layer\n".to_vec(),
            0o600,
        ),
    ];
    let small: Vec<Item> = (0..300)
        .map(|i| {
            let name: &'static str = Box::leak(format!("usr/share/data/f{i:03}").into_boxed_str());
            Item::File(
                name,
                format!("small file {i} of {seed}\n")
                    .repeat(i % 7 + 1)
                    .into_bytes(),
                0o644,
            )
        })
        .collect();
    base.extend(small);
    base.push(Item::HardLink(
        "usr/share/data/f000-link",
        "usr/share/data/f000",
    ));
    base.push(Item::HardLink("bin/ls", "bin/busybox"));
    let top = vec![
        Item::File("etc/hostname", format!("top {seed}\n").into_bytes(), 0o644),
        Item::File("usr/share/data/.wh.f002", vec![], 0o644),
        Item::Dir("opaque", 0o755),
        Item::File("opaque/.wh..wh..opq", vec![], 0o644),
        Item::File("opaque/visible", b"from the top layer\n".to_vec(), 0o644),
        Item::File("new.txt", noise(100_000, seed + 1), 0o640),
    ];
    vec![tar_layer(&base), tar_layer(&top)]
}

/// Writes an OCI image layout at `dir` with `layers` (plain tars, bottom
/// first) tagged `tag`.
pub fn write_layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let d = Digest::of(data);
        std::fs::write(blobs.join(d.hex()), data).unwrap();
        (d.to_string(), data.len())
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let (d, n) = put(l);
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}));
        diff_ids.push(d);
    }
    let config = serde_json::json!({
        "architecture": rcfs_fs::image::pull::host_arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cd, cn) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": descs,
    });
    let (md, mn) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A free TCP port on loopback.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A registry on loopback, stopped when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = crate::harness::temp_dir();
        let port = free_port();
        let conf = dir.path().join("config.yml");
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (apt-get install docker-registry)");
        let reg = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes `oci:LAYOUT:TAG` as `NAME:TAG` compressed as `format`
    /// (`gzip`, `zstd`, `zstd:chunked`); returns the full name.
    pub fn push(&self, layout: &Path, tag: &str, name: &str, format: &str) -> String {
        let dest = format!("{}/{name}:{tag}", self.host());
        run(
            &mut cmd(
                "skopeo",
                [
                    "copy".to_owned(),
                    "-q".into(),
                    "--dest-tls-verify=false".into(),
                    "--dest-compress-format".into(),
                    format.into(),
                    format!("oci:{}:{tag}", layout.display()),
                    format!("docker://{dest}"),
                ],
            ),
            Duration::from_secs(120),
        )
        .expect_ok("skopeo copy");
        dest
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does to what passes through it.
#[derive(Debug, Default)]
pub struct Faults {
    /// Answer this many requests with 503 before passing them on.
    pub unavailable: AtomicU64,
    /// Close this many connections without an answer.
    pub resets: AtomicU64,
    /// Flip a byte in the body of blob answers (GET .../blobs/...).
    pub flip_blobs: AtomicBool,
    /// Refuse everything (as a registry that is down).
    pub down: AtomicBool,
    /// Requests seen, and request lines.
    pub requests: AtomicU64,
    pub log: Mutex<Vec<String>>,
    /// Body bytes passed to clients.
    pub bytes: AtomicU64,
    /// Send only this many body bytes of a larger blob answer, and the
    /// rest once `release` is set (0: no holding back).
    pub hold_blobs_after: AtomicU64,
    pub release: AtomicBool,
    /// Answer range requests for blobs with their right bytes, without a
    /// Content-Length, and then junk for as long as the client reads.
    pub endless_blobs: AtomicBool,
    /// Answer nothing to blob requests while this is set (the connection
    /// stays open).
    pub stall_blobs: AtomicBool,
    /// Add this many spaces (valid JSON still) to each manifest answered.
    pub pad_manifests: AtomicU64,
    /// Request paths rewritten before they go upstream (`from`, `to`): a
    /// lying registry that serves one blob under another's digest.
    pub rewrite: Mutex<Vec<(String, String)>>,
}

/// `head` (a response's, with its final CRLF CRLF) without its
/// Content-Length line, or with it set to `len`.
fn with_content_length(head: &[u8], len: Option<usize>) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("content-length:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if let Some(n) = len {
        out.push_str(&format!("Content-Length: {n}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// An HTTP proxy in front of a registry (one request per connection).
pub struct FaultProxy {
    pub port: u16,
    pub faults: Arc<Faults>,
    stop: Arc<AtomicBool>,
}

fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
        if head.len() > 64 << 10 {
            return None;
        }
    }
    Some(head)
}

/// Rewrites a request head for the upstream: one request per connection.
fn close_after(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (f, st) = (faults.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = conn else { continue };
                let f = f.clone();
                std::thread::spawn(move || Self::serve(c, upstream, &f));
            }
        });
        FaultProxy { port, faults, stop }
    }

    fn serve(mut c: TcpStream, upstream: u16, f: &Faults) {
        let Some(head) = read_head(&mut c) else {
            return;
        };
        let line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        f.requests.fetch_add(1, Ordering::SeqCst);
        f.log.lock().unwrap().push(line.clone());
        if f.down.load(Ordering::SeqCst)
            || f.resets
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            let _ = c.shutdown(Shutdown::Both);
            return;
        }
        if f.unavailable
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let _ = c.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
            return;
        };
        let mut head = close_after(&head);
        for (from, to) in f.rewrite.lock().unwrap().iter() {
            head = String::from_utf8_lossy(&head)
                .replace(from.as_str(), to)
                .into_bytes();
        }
        if up.write_all(&head).is_err() {
            return;
        }
        let mut resp = Vec::new();
        let _ = up.read_to_end(&mut resp);
        let blob_get = line.contains("/blobs/") && line.starts_with("GET");
        if blob_get && f.stall_blobs.load(Ordering::SeqCst) {
            while f.stall_blobs.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        let Some(split) = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
        else {
            let _ = c.write_all(&resp);
            return;
        };
        let pad = f.pad_manifests.load(Ordering::SeqCst) as usize;
        if pad > 0 && line.contains("/manifests/") && resp.starts_with(b"HTTP/1.1 200") {
            let mut out = with_content_length(&resp[..split], Some(resp.len() - split + pad));
            out.extend_from_slice(&resp[split..]);
            out.resize(out.len() + pad, b' ');
            let _ = c.write_all(&out);
            return;
        }
        if blob_get && f.endless_blobs.load(Ordering::SeqCst) && resp.starts_with(b"HTTP/1.1 206") {
            let mut out = with_content_length(&resp[..split], None);
            out.extend_from_slice(&resp[split..]);
            f.bytes
                .fetch_add((resp.len() - split) as u64, Ordering::SeqCst);
            if c.write_all(&out).is_err() {
                return;
            }
            let junk = [b'j'; 16 << 10];
            while c.write_all(&junk).is_ok() {}
            return;
        }
        let flip = f.flip_blobs.load(Ordering::SeqCst) && blob_get;
        if flip && resp.len() > split + 1 {
            let at = split + (resp.len() - split) / 2;
            resp[at] ^= 0x55;
        }
        f.bytes
            .fetch_add((resp.len() - split) as u64, Ordering::SeqCst);
        let hold = f.hold_blobs_after.load(Ordering::SeqCst) as usize;
        if hold > 0 && line.contains("/blobs/") && resp.len() - split > hold {
            if c.write_all(&resp[..split + hold]).is_err() {
                return;
            }
            while !f.release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.write_all(&resp[split + hold..]);
            return;
        }
        let _ = c.write_all(&resp);
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One HTTP/1.1 request to `host` (`127.0.0.1:PORT`): the status and the
/// body.
pub fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (status, _, body) = http_head(host, method, path, headers, body);
    (status, body)
}

/// [`http`], with the answer's head too.
pub fn http_head(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer")
        + 4;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("an HTTP status");
    (status, head, resp[split..].to_vec())
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl Registry {
    /// The manifest of `repo:tag`, parsed.
    pub fn manifest(&self, repo: &str, tag: &str) -> serde_json::Value {
        let (st, body) = http(
            &self.host(),
            "GET",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Accept", OCI_MANIFEST)],
            b"",
        );
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// Stores `manifest` as `repo:tag` (an OCI manifest); its digest.
    pub fn put_manifest(&self, repo: &str, tag: &str, manifest: &serde_json::Value) -> String {
        self.put_manifest_bytes(repo, tag, &serde_json::to_vec(manifest).unwrap())
    }

    /// Stores `bytes` as they are (an OCI manifest another tool wrote,
    /// whose digest must stay) as `repo:tag`; its digest.
    pub fn put_manifest_bytes(&self, repo: &str, tag: &str, bytes: &[u8]) -> String {
        let (st, body) = http(
            &self.host(),
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", OCI_MANIFEST)],
            bytes,
        );
        assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
        Digest::of(bytes).to_string()
    }

    /// Uploads `data` as a blob of `repo` (one monolithic upload); its
    /// digest.
    pub fn put_blob(&self, repo: &str, data: &[u8]) -> String {
        let (st, head, body) = http_head(
            &self.host(),
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            b"",
        );
        assert_eq!(st, 202, "{}", String::from_utf8_lossy(&body));
        let location = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("location")
                    .then(|| v.trim().to_owned())
            })
            .expect("an upload location");
        let path = match location.split_once("://") {
            Some((_, rest)) => &rest[rest.find('/').unwrap()..],
            None => &location[..],
        };
        let d = Digest::of(data).to_string();
        let sep = if path.contains('?') { '&' } else { '?' };
        let (st, body) = http(
            &self.host(),
            "PUT",
            &format!("{path}{sep}digest={d}"),
            &[("Content-Type", "application/octet-stream")],
            data,
        );
        assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
        d
    }

    /// Links blob `digest` of repository `from` into `repo` (a cross-repo
    /// mount), so that a manifest of `repo` may name it.
    pub fn mount_blob(&self, repo: &str, digest: &str, from: &str) {
        let (st, body) = http(
            &self.host(),
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
            &[],
            b"",
        );
        assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    }
}

/// The rootfs `umoci` unpacks from `oci:LAYOUT:TAG` (the reference tree).
pub fn unpack_reference(layout: &Path, tag: &str, dest: &Path) -> PathBuf {
    run(
        &mut cmd(
            "umoci",
            [
                "unpack".to_owned(),
                "--image".into(),
                format!("{}:{tag}", layout.display()),
                dest.display().to_string(),
            ],
        ),
        Duration::from_secs(120),
    )
    .expect_ok("umoci unpack");
    dest.join("rootfs")
}
