//! The `info` record of a layer: containers/storage's `Layer` JSON, of
//! which it reads (podman 4.3, containers/storage 1.43) the compressed
//! digest and size, the uncompressed digest (which names the layer in its
//! image) and the compression, and (podman 5) the TOC digest, which must be
//! the one it asked by, and `flags.expected-layer-diffid`. It fills in the
//! layer's id, parent and time itself.

use serde::Serialize;

use crate::image::pull::LazyLayer;

/// containers/storage's `archive.Compression` numbers.
const GZIP: u8 = 2;
const ZSTD: u8 = 4;

#[derive(Serialize)]
struct Info<'a> {
    #[serde(rename = "compressed-diff-digest")]
    compressed_digest: String,
    #[serde(rename = "compressed-size")]
    compressed_size: u64,
    /// The config's diff_id for the layer.
    #[serde(rename = "diff-digest")]
    diff_digest: String,
    /// The tar's size as near as the TOC tells (exact only with the whole
    /// tar; podman 4 fails on an image with a layer of unknown size, and
    /// shows it as the image's size).
    #[serde(rename = "diff-size")]
    diff_size: u64,
    #[serde(rename = "compression", skip_serializing_if = "Option::is_none")]
    compression: Option<u8>,
    #[serde(rename = "toc-digest", skip_serializing_if = "Option::is_none")]
    toc_digest: Option<String>,
    flags: Flags<'a>,
}

#[derive(Serialize)]
struct Flags<'a> {
    #[serde(rename = "expected-layer-diffid")]
    expected_diff_id: &'a str,
}

/// The `info` of layer `l`, whose tar is about `tar_size` bytes.
pub fn record(l: &LazyLayer, tar_size: u64) -> Vec<u8> {
    let diff = l.diff_id.to_string();
    let mt = &l.media_type;
    let info = Info {
        compressed_digest: l.blob.to_string(),
        compressed_size: l.size,
        diff_digest: diff.clone(),
        diff_size: tar_size,
        compression: if mt.ends_with("zstd") {
            Some(ZSTD)
        } else if mt.ends_with("gzip") {
            Some(GZIP)
        } else {
            None
        },
        toc_digest: l.toc.map(|t| t.to_string()),
        flags: Flags {
            expected_diff_id: &diff,
        },
    };
    serde_json::to_vec(&info).expect("plain fields serialize")
}
