//! What a registry sends about an image: a manifest, an index or a config
//! (as rcfs reads them, with oci-spec's types), the annotations rcfs reads
//! of a layer descriptor, and image references. Errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use rcfs_fs::image::reference::{Reference, Source};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<ImageManifest>(data) {
        for l in m.layers() {
            if let Some(a) = l.annotations() {
                for v in a.values() {
                    let _ = rcfs_fs::image::chunked::parse_ranges(v, l.size());
                }
            }
        }
    }
    let _ = serde_json::from_slice::<ImageIndex>(data);
    let _ = serde_json::from_slice::<ImageConfiguration>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Reference::parse(s, "docker.io");
        let _ = Source::parse(s, "docker.io");
        let _ = rcfs_fs::image::chunked::parse_ranges(s, u64::MAX);
    }
});
