//! Bounds on what an image or a registry controls, end to end: a registry
//! whose blob bodies never end or never come, a manifest over the size
//! limit, tables of contents too large to parse (issue 17, findings 15 and
//! 16). Lying registries are the fault proxy of registry.rs in front of a
//! real one, or images pushed here with rcfs's own registry client.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcfs_fs::image::digest::Digest;
use rcfs_fs::image::reference::Reference;
use rcfs_fs::image::registry::{ClientOptions, Registry as Client};

use crate::images::{pull, rcfs, Case, ImageMount, T};
use crate::mounts::{cmd, run};
use crate::registry::{noise, write_layout, FaultProxy, Registry};

/// The pid of the server of the image mount on `mnt` (its command line
/// names the mountpoint).
fn server_of(mnt: &Path) -> u32 {
    let want = mnt.to_str().unwrap();
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
        if exe.file_name().is_some_and(|n| n == "rcfs") && args.contains(&want.as_bytes()) {
            return pid;
        }
    }
    panic!("no rcfs server for {want}");
}

/// CPU time (user + system) `pid` used over `d`.
fn cpu_over(pid: u32, d: Duration) -> Duration {
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Past the command's ")": state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let a = ticks();
    std::thread::sleep(d);
    Duration::from_millis((ticks() - a) * 1000 / hz)
}

/// Reads `len` bytes of `path` at `at` in another thread; the result, or
/// `None` if it did not come within `limit`.
fn read_within(
    path: &Path,
    at: u64,
    len: usize,
    limit: Duration,
) -> Option<std::io::Result<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let r = (|| {
            let mut f = File::open(&path)?;
            f.seek(SeekFrom::Start(at))?;
            let mut b = vec![0u8; len];
            f.read_exact(&mut b)?;
            Ok(b)
        })();
        let _ = tx.send(r);
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn a_registry_whose_bodies_never_end_or_never_come_costs_a_read_its_deadline() {
    let c = Case::new(140);
    c.registry.push(&c.layout, "v1", "lazy", "zstd:chunked");
    let proxy = FaultProxy::start(c.registry.port);
    let image = format!("{}/lazy:v1", proxy.host());
    pull(&c.store(), &image, &[]).expect_ok("rcfs pull");
    let m = ImageMount::new(&c.store(), &image, &c.path("mnt"), &[]);
    let server = server_of(&m.mnt);

    // The right bytes, then a body that goes on for as long as it is read:
    // reads have their bytes at once (before: every read of the mount hung,
    // the server draining the body).
    proxy.faults.endless_blobs.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let got = read_within(&m.mnt.join("etc/hostname"), 0, 8, Duration::from_secs(20))
        .expect("a read of a range answered with an endless body returned")
        .unwrap();
    assert_eq!(got, b"top 140\n");
    let small = "small file 150 of 140\n".repeat(150 % 7 + 1);
    let got = read_within(
        &m.mnt.join("usr/share/data/f150"),
        0,
        small.len(),
        Duration::from_secs(20),
    )
    .expect("a read of a range answered with an endless body returned")
    .unwrap();
    assert_eq!(got, small.as_bytes());
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let spent = cpu_over(server, Duration::from_secs(2));
    assert!(
        spent < Duration::from_millis(300),
        "the server reads no endless body: {spent:?} of CPU in 2 s"
    );
    proxy.faults.endless_blobs.store(false, Ordering::SeqCst);

    // No answer at all: the read fails with EIO within the request's
    // deadline (30 s, plus 1 s per MiB asked), never hangs. The kernel asks
    // again once after a failed read-ahead, so read(2) may wait for two.
    proxy.faults.stall_blobs.store(true, Ordering::SeqCst);
    let big = m.mnt.join("usr/share/data/big.bin");
    let t0 = Instant::now();
    let r = read_within(&big, 3 << 20, 4096, Duration::from_secs(120))
        .expect("a read from a registry that answers nothing returned");
    let took = t0.elapsed();
    let err = r.expect_err("no bytes came, so no bytes are served");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        took >= Duration::from_secs(25) && took < Duration::from_secs(80),
        "{took:?}"
    );
    let s = m.stats();
    assert!((1..=2).contains(&s["fetch_timeouts"]), "{s:?}");
    eprintln!("read(2) of a stalled registry: EIO after {took:?}, {s:?}");
    let shown = run(
        &mut rcfs(&c.store(), &["stats", m.mnt.to_str().unwrap()]),
        T,
    )
    .expect_ok("rcfs stats")
    .stdout;
    assert!(
        shown.contains("last_fetch_error") && shown.contains("deadline"),
        "{shown}"
    );
    let spent = cpu_over(server, Duration::from_secs(2));
    assert!(
        spent < Duration::from_millis(300),
        "{spent:?} of CPU in 2 s"
    );

    // The registry answers again: so does the mount.
    proxy.faults.stall_blobs.store(false, Ordering::SeqCst);
    assert!(std::fs::read(&big).unwrap() == noise(6 << 20, 140));
}

#[test]
fn a_manifest_over_the_limit_is_refused() {
    let c = Case::new(141);
    c.registry.push(&c.layout, "v1", "img", "gzip");
    let proxy = FaultProxy::start(c.registry.port);
    // Valid JSON still (trailing spaces), 5 MiB: under the old 8 MiB limit,
    // over containers/image's 4 MiB.
    proxy.faults.pad_manifests.store(5 << 20, Ordering::SeqCst);
    let t0 = Instant::now();
    let r = pull(&c.store(), &format!("{}/img:v1", proxy.host()), &[]);
    assert!(
        !r.success() && r.stderr.contains("larger than 4 MiB"),
        "{}",
        r.stderr
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
    let images = run(&mut rcfs(&c.store(), &["images", "--json"]), T)
        .expect_ok("images")
        .stdout;
    assert!(!images.contains("img"), "{images}");
}

/// Pushes to `reg` an image `name:v1` of one zstd:chunked layer whose
/// table of contents is the zstd frame of `json`, said (by its position
/// annotation) to be `said_len` bytes uncompressed.
fn push_with_toc(reg: &Registry, name: &str, json: &[u8], said_len: u64) -> String {
    let r = Reference::parse(&format!("{}/{name}:v1", reg.host()), "docker.io").unwrap();
    let client = Client::new(
        &r,
        ClientOptions {
            insecure: true,
            ..Default::default()
        },
    );
    let dir = crate::harness::temp_dir();
    let upload = |bytes: &[u8]| -> (Digest, usize) {
        let d = Digest::of(bytes);
        let p = dir.path().join(d.hex());
        std::fs::write(&p, bytes).unwrap();
        if !client.has_blob(&d).unwrap() {
            client.upload_blob(&d, &File::open(&p).unwrap()).unwrap();
        }
        (d, bytes.len())
    };
    let frame = zstd::bulk::compress(json, 1).unwrap();
    let mut blob = vec![0u8; 8];
    blob.extend_from_slice(&frame);
    let (layer, layer_len) = upload(&blob);
    let config = serde_json::json!({
        "architecture": rcfs_fs::image::pull::host_arch(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.to_string()]},
    });
    let (cd, cn) = upload(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cn},
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
            "digest": layer.to_string(), "size": layer_len,
            "annotations": {
                "io.github.containers.zstd-chunked.manifest-checksum": Digest::of(&frame).to_string(),
                "io.github.containers.zstd-chunked.manifest-position":
                    format!("8:{}:{said_len}:1", frame.len()),
            },
        }],
    });
    client
        .put_manifest(
            "v1",
            &serde_json::to_vec(&manifest).unwrap(),
            "application/vnd.oci.image.manifest.v1+json",
        )
        .unwrap();
    format!("{}/{name}:v1", reg.host())
}

/// A table of contents of `n` directories, as JSON.
fn toc_of_dirs(n: usize) -> Vec<u8> {
    let mut json = String::from(r#"{"version":1,"entries":["#);
    for i in 0..n {
        json.push_str(&format!(r#"{{"type":"dir","name":"d{i:08x}"}},"#));
    }
    json.pop();
    json.push_str("]}");
    json.into_bytes()
}

#[test]
fn tables_of_contents_too_large_to_parse_are_refused_quickly_in_little_memory() {
    crate::mounts::require_privileges();
    let reg = Arc::new(Registry::start());
    // 100 MiB of JSON (about 3.2 million entries) in a frame of a few MiB:
    // before, under the 1 GiB limit, parsed into well over a GiB.
    let huge = toc_of_dirs(100 << 20 >> 5);
    assert!(huge.len() > 100 << 20);
    // 1.1 million entries in 36 MiB: under the size limit, over the
    // entry limit.
    let many = toc_of_dirs(1_100_000);
    assert!(many.len() < 50 << 20);
    for (name, json, said, want) in [
        (
            "said",
            &huge,
            huge.len() as u64,
            "outside what rcfs accepts",
        ),
        ("lies", &huge, 40 << 20, "larger than 41943040 bytes"),
        (
            "many",
            &many,
            many.len() as u64,
            "more than 1048576 entries",
        ),
    ] {
        let image = push_with_toc(&reg, name, json, said);
        let store = crate::harness::temp_dir();
        let t0 = Instant::now();
        // GNU time's %M: the pull's largest resident size, in KiB.
        let r = run(
            &mut cmd(
                "/usr/bin/time",
                [
                    "-f",
                    "maxrss_kib %M",
                    crate::mounts::RCFS,
                    "--root",
                    store.path().to_str().unwrap(),
                    "pull",
                    "--tls-verify=false",
                    &image,
                ],
            ),
            T,
        );
        let took = t0.elapsed();
        assert!(
            !r.success() && r.stderr.contains(want),
            "{name}: {}",
            r.stderr
        );
        let rss: u64 = r
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("maxrss_kib "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}", r.stderr));
        // Refused before parsing: little; refused while parsing, at the
        // entry limit: what a million entries take (about 450 MiB).
        let most = if name == "many" { 640 << 10 } else { 200 << 10 };
        assert!(rss < most, "{name}: the pull took {rss} KiB resident");
        assert!(took < Duration::from_secs(60), "{name}: {took:?}");
    }
}

/// A tar of one GNU sparse file `sparse` of `size` bytes: a 4 KiB block
/// of `A` at 1 MiB and one of `B` at its end, the rest holes.
fn sparse_tar(size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_path("sparse").unwrap();
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_size(8192);
    let g = h.as_gnu_mut().unwrap();
    g.set_real_size(size);
    g.sparse[0].set_offset(1 << 20);
    g.sparse[0].set_length(4096);
    g.sparse[1].set_offset(size - 4096);
    g.sparse[1].set_length(4096);
    h.set_cksum();
    let mut data = vec![b'A'; 4096];
    data.extend_from_slice(&[b'B'; 4096]);
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &data[..]).unwrap();
    b.into_inner().unwrap()
}

/// The disk the files under `dir` take, in bytes.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let md = e.metadata().unwrap();
        n += md.blocks() * 512;
        if md.is_dir() {
            n += disk_usage(&e.path());
        }
    }
    n
}

#[test]
fn a_sparse_layer_is_stored_sparse_and_one_past_the_limit_is_refused() {
    crate::mounts::require_privileges();
    let dir = crate::harness::temp_dir();
    let size = 256u64 << 20;
    let tar = sparse_tar(size);
    assert!(tar.len() < 16 << 10);
    let layout = dir.path().join("layout");
    write_layout(&layout, "v1", &[tar]);
    let oci = format!("oci:{}:v1", layout.display());
    let store = dir.path().join("store");
    pull(&store, &oci, &[]).expect_ok("pull of a sparse layer");
    // Before: the 256 MiB were written out as zeros.
    let used = disk_usage(&store);
    assert!(used < 16 << 20, "the store takes {used} bytes");
    let m = ImageMount::new(&store, &oci, &dir.path().join("mnt"), &[]);
    let f = m.mnt.join("sparse");
    assert_eq!(std::fs::metadata(&f).unwrap().len(), size);
    for (at, want) in [
        (0, 0u8),
        (1 << 20, b'A'),
        (100 << 20, 0),
        (size - 4096, b'B'),
    ] {
        let got = read_within(&f, at, 4096, T).unwrap().unwrap();
        assert!(got.iter().all(|&b| b == want), "at {at}");
    }
    drop(m);
    // Past the limit on what a layer may expand to: refused, saying which.
    let store = dir.path().join("store-limited");
    let r = run(
        rcfs(&store, &["pull", &oci]).env("RCFS_LAYER_MAX_BYTES", (64u64 << 20).to_string()),
        T,
    );
    assert!(
        !r.success()
            && r.stderr
                .contains("rcfs's limit for one layer (RCFS_LAYER_MAX_BYTES"),
        "{}",
        r.stderr
    );
}
