//! `rcfs-overlay`'s command line (fuse-overlayfs's), as podman or `mount
//! -t fuse.rcfs-overlay` hand it over: NUL-separated arguments. Errors for
//! what it does not take, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let args: Vec<String> = text.split('\0').map(str::to_owned).collect();
    let _ = rcfs::overlay_args::parse(&args);
});
