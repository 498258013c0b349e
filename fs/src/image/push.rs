//! `rcfs push`: an image from the store to a registry.
//!
//! Each blob goes once: not at all when the registry has it, by a
//! cross-repository mount when it is in another repository of the same
//! registry (the image's origin), else uploaded from the store. A layer the
//! store does not hold whole (pulled lazily, or indexed from a stream) is
//! fetched from the image's origin into the store first, checked against
//! its digest. The manifest goes last, so the registry never lists an image
//! whose blobs it lacks.

use std::io;
use std::sync::Arc;

use super::auth;
use super::digest::Digest;
use super::reference::Reference;
use super::registry::{ClientOptions, Registry};
use super::store::{ImageRecord, Store};
use crate::error::layer_error;

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct PushReport {
    pub manifest: Option<Digest>,
    pub uploaded: Vec<Digest>,
    pub present: Vec<Digest>,
    pub mounted: Vec<Digest>,
    pub bytes: u64,
}

fn client(r: &Reference, insecure: bool) -> Registry {
    Registry::new(
        r,
        ClientOptions {
            insecure,
            credentials: auth::lookup(&auth::auth_files(), &r.registry, &r.repository),
            ..Default::default()
        },
    )
}

/// Pushes `img` to `dest` (`REGISTRY/REPO[:TAG]`).
pub fn push(
    store: &Store,
    img: &ImageRecord,
    dest: &str,
    insecure: bool,
    note: &dyn Fn(&str),
) -> io::Result<PushReport> {
    // No gc under the objects it sends.
    let _in_use = store.lock_in_use()?;
    let r = Reference::parse(dest, "docker.io")
        .map_err(|e| layer_error(libc::EINVAL, e.to_string()))?;
    let reg = client(&r, insecure);
    let origin = img.origin.as_ref().map(|o| {
        let or = Reference {
            registry: o.registry.clone(),
            repository: o.repository.clone(),
            tag: None,
            digest: None,
        };
        (o.clone(), Arc::new(client(&or, o.insecure)))
    });
    let mut report = PushReport::default();
    let mut blobs: Vec<Digest> = Vec::new();
    for l in &img.layers {
        blobs.push(Digest::parse(l)?);
    }
    blobs.push(Digest::parse(&img.config)?);
    for d in blobs {
        if reg.has_blob(&d)? {
            report.present.push(d);
            continue;
        }
        if let Some((o, _)) = &origin {
            if o.registry == r.registry && reg.mount_blob(&d, &o.repository)? {
                report.mounted.push(d);
                continue;
            }
        }
        let file = match store.blobs.open_object(&d)? {
            Some(f) => f,
            None => {
                let Some((o, oreg)) = &origin else {
                    return Err(layer_error(
                        libc::EIO,
                        format!(
                            "{}: blob {d} is not in the store as it was published (the layer was indexed from its stream); \
                             push an image made with `rcfs convert`, whose blobs the store keeps",
                            img.name
                        ),
                    ));
                };
                note(&format!(
                    "fetching blob {} from {}/{}",
                    d.short(),
                    o.registry,
                    o.repository
                ));
                let mut src = oreg.blob(&d, None)?;
                let mut w = store.blobs.writer()?;
                io::copy(&mut src, &mut w)?;
                w.commit(d, false)?;
                store.blobs.open_object(&d)?.ok_or_else(|| {
                    layer_error(libc::EIO, format!("blob {d} vanished from the store"))
                })?
            }
        };
        let len = file.metadata()?.len();
        note(&format!("uploading blob {} ({len} bytes)", d.short()));
        reg.upload_blob(&d, &file)?;
        report.uploaded.push(d);
        report.bytes += len;
    }
    let m_d = Digest::parse(&img.manifest)?;
    let bytes = store.image_blob(img, "manifest", &img.manifest)?;
    #[derive(serde::Deserialize)]
    struct Mt {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    let mt = serde_json::from_slice::<Mt>(&bytes)
        .ok()
        .map(|m| m.media_type)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
    reg.put_manifest(&r.manifest_ref(), &bytes, &mt)?;
    report.manifest = Some(m_d);
    Ok(report)
}
