//! End-to-end tests of rcfs's union filesystem: real mounts, real syscalls.
//!
//! Most cases are *comparisons*: the same layers are mounted twice, once by
//! kernel overlayfs (the reference) and once by rcfs (the subject), the same
//! operations run on both, and the results of every syscall (value or errno)
//! and the whole merged tree afterwards must be equal (see harness.rs,
//! ops.rs, snapshot.rs). Where rcfs intentionally differs from the kernel
//! (renaming lower dirs, OCI whiteouts in its upper dir, metadata-only
//! copy-up) the case checks rcfs on its own and says so.
//!
//! Run as root (CI does): `cargo test -p rcfs --test e2e`. The suite fails,
//! never skips, without root, /dev/fuse or kernel overlayfs. Every test has
//! its own temp dir and mount points and may run in parallel with the others;
//! mounts are taken down on drop, also when a test fails. The rootless cases
//! `chmod 666 /dev/fuse` (needed for unprivileged FUSE mounts).
//!
//! `RCFS_E2E_IMPL=fuse-overlayfs` puts /usr/bin/fuse-overlayfs in rcfs's
//! place in the comparison, rcfs-overlay and rootless cases (the cli cases
//! always run rcfs). That is how the harness itself is validated: the
//! rcfs-only assertions are then skipped, and only these cases fail, for
//! fuse-overlayfs 1.10's own differences from the kernel:
//! * symlink copy-up does not keep the link's mtime: `files::hard_link_files`,
//!   `rename::rename_errors`, `rename::rename_files_across_dirs`,
//!   `inodes::inode_numbers_stable_across_lookups_and_copy_up`,
//!   `inodes::inode_numbers_stable_across_rename`,
//!   `remount::changes_survive_remount`;
//! * a lower name stays reachable by lookup under a dir removed and made
//!   again: `dirs::delete_lower_dir_then_mkdir_gives_empty_dir`,
//!   `dirs::remove_whole_trees`;
//! * `rename::rename_upper_dirs`: ENOENT renaming a dir over an empty merged
//!   dir;
//! * `files::unlink_while_open`: fstat of an unlinked open file says nlink 1;
//! * `inodes::hard_links_in_lower_share_one_inode`: wrong nlink;
//! * `attrs::statfs_works`: f_namelen 251;
//! * `readonly::mount_without_upper_is_read_only`: statvfs lacks ST_RDONLY;
//! * `files::lower_entries_with_longest_names`: the daemon dies (ENOTCONN).

mod harness;
mod layers;
mod mounts;
mod ops;
mod registry;
mod snapshot;
mod sys;

mod als;
mod attrs;
mod bad_runs;
mod bounds;
mod cli;
mod commit;
mod concurrency;
mod containers;
mod copyup;
mod detach;
mod dirs;
mod durability;
mod escape;
mod files;
mod image_trust;
mod images;
mod inodes;
mod io;
mod isolation;
mod keep_id;
mod keeper;
mod lifecycle;
mod network;
mod overlay_cli;
mod partial_pull;
mod permissions;
mod podman5;
mod podman_compare;
mod readdir;
mod readonly;
mod remount;
mod rename;
mod rootless;
mod run_options;
mod seccomp;
mod shared_host;
mod stress;
mod volumes;
