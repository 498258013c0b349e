//! A zstd:chunked table of contents, as JSON from an image: parsed into the
//! tree rcfs serves, for a blob and for the store. It must reject what it
//! cannot serve with an error, never panic or allocate by what it claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rcfs_fs::image::toc::{DataIn, Toc, TocJson};

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<TocJson>(data) else {
        return;
    };
    for place in [DataIn::Blob { data_end: 1 << 20 }, DataIn::Store] {
        if let Ok(toc) = Toc::parse(&json, place) {
            let _ = toc.data_size();
        }
    }
});
