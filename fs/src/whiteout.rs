//! The one place that knows how layers spell deletions and opaque directories.
//!
//! Lower layers may use either family of spellings:
//! * OCI image-spec: an empty file `.wh.NAME` deletes `NAME` of the layers
//!   below; a file `.wh..wh..opq` makes its directory opaque.
//! * overlayfs: a character device 0/0 named `NAME` deletes `NAME`; a directory
//!   with the xattr `trusted.overlay.opaque` or `user.overlay.opaque` set to
//!   `y` is opaque.
//!
//! rcfs writes the OCI spellings into its upper directory, because an
//! unprivileged user can create them (a 0/0 device node needs `CAP_MKNOD`, a
//! `trusted.*` xattr needs `CAP_SYS_ADMIN`), and `rcfs commit` can then copy
//! them into a layer as they are. Upper dirs written by kernel overlayfs or
//! fuse-overlayfs are read correctly too. rcfs's own bookkeeping xattrs
//! (`user.rcfs.*`) and overlayfs's are never shown to programs.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Prefix of an OCI whiteout file name.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the OCI opaque-directory marker file.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Directory xattrs that mark a directory opaque in overlayfs layers.
pub const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];
/// Upper-file xattr that marks a metadata-only copy-up: the upper file holds
/// the metadata, its data still lives in the lower layer at the path given by
/// the xattr's value.
pub const METACOPY_XATTR: &str = "user.rcfs.metacopy";
/// Upper-file xattr set, next to [`METACOPY_XATTR`], once a copy-up's data
/// is all written but not yet flushed; its value is the boot id of the
/// system that wrote it (see [`crate::flush`]).
pub const UNFLUSHED_XATTR: &str = "user.rcfs.unflushed";

/// What one raw directory entry of a layer means in the merged view.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    /// An ordinary entry, visible unless hidden from above.
    Entry,
    /// Deletes `name` of the layers below (the `.wh.` form or a 0/0 device).
    Whiteout(&'a OsStr),
    /// Makes the containing directory opaque.
    Opaque,
}

/// Classifies a raw entry `name`. `is_char_dev_0_0` is true when the entry is
/// a character device with device number 0/0 (the overlayfs whiteout).
pub fn classify(name: &OsStr, is_char_dev_0_0: bool) -> Kind<'_> {
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER.as_bytes() {
        return Kind::Opaque;
    }
    if let Some(rest) = bytes.strip_prefix(WHITEOUT_PREFIX) {
        if !rest.is_empty() {
            return Kind::Whiteout(OsStr::from_bytes(rest));
        }
    }
    if is_char_dev_0_0 {
        return Kind::Whiteout(name);
    }
    Kind::Entry
}

/// The name of the upper-dir file that deletes `name`.
pub fn whiteout_name(name: &OsStr) -> OsString {
    let mut out = OsString::from(OsStr::from_bytes(WHITEOUT_PREFIX));
    out.push(name);
    out
}

/// Longest file name the host filesystems take.
const NAME_MAX: usize = 255;

/// How the upper dir spells the deletion of `name`.
#[derive(Debug, PartialEq, Eq)]
pub enum UpperWhiteout {
    /// An empty file `.wh.NAME` beside where `NAME` was.
    File(OsString),
    /// A character device 0/0 in place of `NAME`: for names too long to take
    /// the `.wh.` prefix. Creating one needs no privilege (Linux 5.8+).
    Device,
}

/// The spelling rcfs uses in the upper dir for deleting `name`.
pub fn upper_whiteout(name: &OsStr) -> UpperWhiteout {
    if name.len() + WHITEOUT_PREFIX.len() <= NAME_MAX {
        UpperWhiteout::File(whiteout_name(name))
    } else {
        UpperWhiteout::Device
    }
}

/// True when a program may not create an entry called `name`: it would be
/// read back as a whiteout or opaque marker and so vanish from the merged view.
pub fn is_reserved_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WHITEOUT_PREFIX)
}

/// True when a directory with the xattr names `names` is opaque by xattr;
/// `get` reads a value (asked only for the opaque xattrs present, so most
/// directories cost one listing).
pub fn is_opaque_dir(names: &[OsString], get: impl Fn(&OsStr) -> Option<Vec<u8>>) -> bool {
    names.iter().any(|n| {
        OPAQUE_XATTRS.iter().any(|x| n.as_bytes() == x.as_bytes())
            && get(n).as_deref() == Some(b"y")
    })
}

/// True for xattrs that belong to the union's bookkeeping and must be neither
/// shown to nor set by programs.
pub fn is_private_xattr(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b"trusted.overlay.")
        || b.starts_with(b"user.overlay.")
        || b.starts_with(b"user.rcfs.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_oci_and_overlay_forms() {
        assert_eq!(classify(OsStr::new("a"), false), Kind::Entry);
        assert_eq!(
            classify(OsStr::new(".wh.a"), false),
            Kind::Whiteout(OsStr::new("a"))
        );
        assert_eq!(classify(OsStr::new(".wh..wh..opq"), false), Kind::Opaque);
        assert_eq!(
            classify(OsStr::new("dev0"), true),
            Kind::Whiteout(OsStr::new("dev0"))
        );
        // `.wh.` alone names nothing: an ordinary (odd) entry.
        assert_eq!(classify(OsStr::new(".wh."), false), Kind::Entry);
        assert_eq!(classify(OsStr::new(".whx"), false), Kind::Entry);
    }

    #[test]
    fn whiteout_name_round_trips() {
        let w = whiteout_name(OsStr::new("file.txt"));
        assert_eq!(w, OsString::from(".wh.file.txt"));
        assert_eq!(classify(&w, false), Kind::Whiteout(OsStr::new("file.txt")));
    }

    #[test]
    fn long_names_use_the_device_form() {
        let short = OsString::from("a".repeat(251));
        let long = OsString::from("a".repeat(252));
        assert_eq!(
            upper_whiteout(&short),
            UpperWhiteout::File(whiteout_name(&short))
        );
        assert_eq!(upper_whiteout(&long), UpperWhiteout::Device);
    }

    #[test]
    fn private_xattrs() {
        assert!(is_private_xattr(OsStr::new("trusted.overlay.opaque")));
        assert!(is_private_xattr(OsStr::new("user.overlay.opaque")));
        assert!(is_private_xattr(OsStr::new(METACOPY_XATTR)));
        assert!(!is_private_xattr(OsStr::new("user.mime_type")));
        let names = vec![
            OsString::from("user.x"),
            OsString::from("user.overlay.opaque"),
        ];
        assert!(is_opaque_dir(&names, |_| Some(b"y".to_vec())));
        assert!(!is_opaque_dir(&names, |_| Some(b"n".to_vec())));
        assert!(!is_opaque_dir(&names[..1], |_| Some(b"y".to_vec())));
    }
}
