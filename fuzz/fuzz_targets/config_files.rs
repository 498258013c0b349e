//! The user's configuration files rcfs reads as podman does:
//! `registries.conf` (TOML: aliases, search registries, mirrors) and the
//! auth files `podman login` writes (JSON). Errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rcfs_fs::image::registries::Registries;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Registries::from_texts(&[("registries.conf".into(), text.to_owned())]) {
        for name in ["alpine", "docker.io/library/alpine:3", "quay.io/a/b@sha256:00"] {
            if let Ok(refs) = r.candidates(name) {
                for reference in refs {
                    let _ = reference.to_string();
                }
            }
        }
    }
    let _ = rcfs_fs::image::auth::lookup_in(text, "127.0.0.1:5000", "a/b");
    let _ = rcfs_fs::image::auth::lookup_in(text, "docker.io", "library/alpine");
});
