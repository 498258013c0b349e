//! The image commands: `pull`, `images`, `rmi`, `gc`, `inspect`, with
//! progress bars on a terminal and one line per layer otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use rcfs_fs::image::digest::Digest;
use rcfs_fs::image::pull::{self, LayerOutcome, Progress, PullOptions, PullReport};
use rcfs_fs::image::store::{ImageRecord, LayerKey, Store};

/// Sizes as people read them.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Bars on a terminal, lines otherwise.
struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    fn new(quiet: bool) -> Bars {
        let multi = (!quiet && std::io::stderr().is_terminal()).then(MultiProgress::new);
        Bars {
            multi,
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Progress for Bars {
    fn layer_start(&self, d: &Digest, size: u64, what: &str) {
        if let Some(m) = &self.multi {
            let b = m.add(ProgressBar::new(size));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix} {msg:18} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(d.short());
            b.set_message(what.to_owned());
            self.bars.lock().insert(*d, b);
        }
    }
    fn layer_bytes(&self, d: &Digest, done: u64) {
        if let Some(b) = self.bars.lock().get(d) {
            b.set_position(done);
        }
    }
    fn layer_done(&self, layer: &LayerKey, o: &LayerOutcome) {
        let d = layer.blob();
        let msg = describe(o);
        match self.bars.lock().remove(d) {
            Some(b) => b.finish_with_message(msg),
            None if self.multi.is_some() => {
                if let Some(m) = &self.multi {
                    let _ = m.println(format!("{} {msg}", d.short()));
                }
            }
            None => {}
        }
    }
    fn note(&self, msg: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }
}

/// `rcfs pull`.
pub fn pull(
    store: &Store,
    name: &str,
    lazy: bool,
    insecure: bool,
    quiet: bool,
) -> Result<PullReport> {
    let bars = Bars::new(quiet);
    let opts = PullOptions {
        lazy,
        insecure,
        jobs: 3,
        // Nothing is served while `rcfs pull` runs.
        unverified_streaming: false,
    };
    let t0 = std::time::Instant::now();
    let report =
        pull::pull(store, name, &opts, &bars).with_context(|| format!("cannot pull {name}"))?;
    drop(bars);
    if !quiet {
        let (mut reused, mut lazy_n, mut full, mut chunks) = (0, 0, 0, 0);
        for (d, size, o) in &report.layers {
            match o {
                LayerOutcome::Reused => reused += 1,
                LayerOutcome::Lazy { .. } => lazy_n += 1,
                LayerOutcome::Indexed { .. } => full += 1,
                LayerOutcome::Chunks { .. } => chunks += 1,
            }
            if !std::io::stderr().is_terminal() {
                eprintln!("layer {} ({}): {}", d.short(), human(*size), describe(o));
            }
        }
        eprintln!(
            "pulled {} in {:.1}s: {} layers ({} lazy, {} fetched whole, {} fetched by chunks, {} already in the store), {} fetched of {}",
            report.image.name,
            t0.elapsed().as_secs_f64(),
            report.layers.len(),
            lazy_n,
            full,
            chunks,
            reused,
            human(report.bytes_fetched()),
            human(report.image.size),
        );
    }
    Ok(report)
}

fn describe(o: &LayerOutcome) -> String {
    match o {
        LayerOutcome::Reused => "already in the store".into(),
        LayerOutcome::Lazy { toc_bytes } => format!(
            "lazy, fetched its table of contents ({})",
            human(*toc_bytes)
        ),
        LayerOutcome::Indexed { bytes } => format!("fetched whole ({})", human(*bytes)),
        LayerOutcome::Chunks { bytes } => format!(
            "fetched by its chunks ({}, without what the store held), its tar rebuilt and checked",
            human(*bytes)
        ),
    }
}

/// The image `name` from the store, pulling it lazily if absent (a
/// registry name) and `pull_if_missing`.
pub fn resolve(
    store: &Store,
    name: &str,
    pull_if_missing: bool,
    insecure: bool,
) -> Result<ImageRecord> {
    if let Some(i) = find(store, name)? {
        return Ok(i);
    }
    if !pull_if_missing {
        bail!(
            "no image {name} in the store at {}: pull it first (rcfs pull {name})",
            store.root.display()
        );
    }
    Ok(pull(store, name, true, insecure, false)?.image)
}

/// The image `name` from the store, if it is there.
pub fn find(store: &Store, name: &str) -> Result<Option<ImageRecord>> {
    if let Some(i) = store.find(name)? {
        return Ok(Some(i));
    }
    // The name as the store lists it (`debian` → `docker.io/library/debian:latest`).
    if let Ok(rcfs_fs::image::reference::Source::Registry(r)) =
        rcfs_fs::image::reference::Source::parse(name, "docker.io")
    {
        return Ok(store.find(&r.canonical())?);
    }
    Ok(None)
}

/// The name under which the store keeps a new image called `dest`
/// (`demo` → `docker.io/library/demo:latest`, as a pull would name it).
pub fn canonical_name(dest: &str) -> String {
    match rcfs_fs::image::reference::Reference::parse(dest, "docker.io") {
        Ok(r) => r.canonical(),
        Err(_) => dest.to_owned(),
    }
}

/// `rcfs images`.
pub fn images(store: &Store, json: bool) -> Result<()> {
    let imgs = store.images()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&imgs)?);
        return Ok(());
    }
    println!(
        "{:<50} {:<14} {:>6} {:>10} {:>10}  PULLED",
        "NAME", "MANIFEST", "LAYERS", "SIZE", "LAZY"
    );
    for i in imgs {
        let lazy = i
            .layer_keys()
            .unwrap_or_default()
            .iter()
            .filter_map(|k| store.layer(k).ok().flatten())
            .filter(|r| r.format == rcfs_fs::image::store::LayerFormat::ZstdChunked)
            .count();
        println!(
            "{:<50} {:<14} {:>6} {:>10} {:>10}  {}",
            i.name,
            i.manifest
                .trim_start_matches("sha256:")
                .get(..12)
                .unwrap_or(""),
            i.layers.len(),
            human(i.size),
            format!("{lazy}/{}", i.layers.len()),
            i.pulled
        );
    }
    Ok(())
}

/// `rcfs rmi`.
pub fn rmi(store: &Store, names: &[String]) -> Result<()> {
    let containers = crate::containers::list(store)?;
    for n in names {
        let img = match store.find(n)? {
            Some(i) => i,
            None => bail!("no image {n} in the store at {}", store.root.display()),
        };
        let name = img.name;
        // A container (running or stopped) needs its image's layers, which
        // a gc would take once the image is gone.
        let users: Vec<&str> = containers
            .iter()
            .filter(|(c, _)| {
                c.image == name || c.image_id.as_deref() == Some(img.manifest.as_str())
            })
            .map(|(c, _)| c.name.as_str())
            .collect();
        if !users.is_empty() {
            bail!(
                "image {name} is in use by container {}: remove {} first (rcfs rm NAME)",
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" }
            );
        }
        store.remove_image(&name)?;
        println!("removed {name}");
    }
    eprintln!("(its data stays until `rcfs gc`)");
    Ok(())
}

/// `rcfs gc`.
pub fn gc(store: &Store, all: bool) -> Result<()> {
    let r = store.gc(all)?;
    println!(
        "removed {} layer records and {} objects ({})",
        r.layers,
        r.objects,
        human(r.bytes)
    );
    Ok(())
}

/// `rcfs inspect`.
pub fn inspect(store: &Store, name: &str) -> Result<()> {
    let img = resolve(store, name, false, false)?;
    let cfg_d = Digest::parse(&img.config)?;
    let cfg: serde_json::Value = match store.blobs.read(&cfg_d)? {
        Some(b) => serde_json::from_slice(&b)?,
        None => serde_json::Value::Null,
    };
    let mut layers = Vec::new();
    for key in img.layer_keys()? {
        layers.push(match store.layer(&key)? {
            Some(r) => serde_json::to_value(r)?,
            None => serde_json::json!({"digest": key.blob().to_string(), "missing": true}),
        });
    }
    let out = serde_json::json!({
        "name": img.name,
        "manifest": img.manifest,
        "origin": img.origin,
        "pulled": img.pulled,
        "size": img.size,
        "layers": layers,
        "config": cfg,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The store for `--root`, or the default one.
pub fn open_store(root: Option<&Path>) -> Result<Store> {
    let root = store_root(root);
    Store::open(&root).with_context(|| format!("cannot open the store at {}", root.display()))
}

/// The store's root: `--root`, or the user's default.
pub fn store_root(root: Option<&Path>) -> std::path::PathBuf {
    root.map(Path::to_owned).unwrap_or_else(Store::default_root)
}

/// `rcfs convert`.
pub fn convert(
    store: &Store,
    source: &str,
    dest: &str,
    trace: Option<&Path>,
    level: i32,
    insecure: bool,
) -> Result<()> {
    let src = resolve(store, source, true, insecure)?;
    let (trace, reads) = match trace {
        Some(p) => rcfs_fs::image::convert::parse_trace(
            &std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the trace {}", p.display()))?,
        ),
        None => Default::default(),
    };
    let name = canonical_name(dest);
    let t0 = std::time::Instant::now();
    let opts = rcfs_fs::image::convert::ConvertOptions {
        level,
        trace,
        reads,
    };
    let img = rcfs_fs::image::convert::convert(store, &src, &name, &opts, &|i, n| {
        if i < n {
            eprintln!("converting layer {}/{n}", i + 1);
        }
    })
    .with_context(|| format!("cannot convert {}", src.name))?;
    eprintln!(
        "converted {} to {} in {:.1}s: {} zstd:chunked layers, {}",
        src.name,
        img.name,
        t0.elapsed().as_secs_f64(),
        img.layers.len(),
        human(img.size)
    );
    Ok(())
}

/// `rcfs push`.
pub fn push(store: &Store, name: &str, dest: Option<&str>, insecure: bool) -> Result<()> {
    let img = resolve(store, name, false, insecure)?;
    let dest = dest.unwrap_or(&img.name).to_owned();
    let r = rcfs_fs::image::push::push(store, &img, &dest, insecure, &|m| eprintln!("{m}"))
        .with_context(|| format!("cannot push {} to {dest}", img.name))?;
    eprintln!(
        "pushed {} to {dest}: {} blobs uploaded ({}), {} already there, {} mounted from another repository; manifest {}",
        img.name,
        r.uploaded.len(),
        human(r.bytes),
        r.present.len(),
        r.mounted.len(),
        r.manifest.map(|d| d.to_string()).unwrap_or_default()
    );
    Ok(())
}
