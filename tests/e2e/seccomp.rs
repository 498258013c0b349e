//! The container's command runs under a seccomp filter, as podman's does
//! (issue 17, finding 5): podman's profile from
//! `/usr/share/containers/seccomp.json` by default, rcfs's built-in one
//! (given here as a file, since this host has podman's), a profile of the
//! user's with `--security-opt seccomp=FILE`, none with
//! `seccomp=unconfined`; a profile rcfs cannot use fails the start (125).
//!
//! The image is isolation's (Debian's `/lib` links); the host's `/usr` is
//! bound in read-only for `keyctl` and `python3`.

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use crate::containers::{code, Fixture};
use crate::isolation::{fixture, script};
use crate::mounts::{run, RCFS};

const T: Duration = Duration::from_secs(180);

/// rcfs's built-in profile, as the binary has it.
const BUILTIN: &str = include_str!("../../runtime/src/seccomp_default.json");

/// What a command finds of its filter, and whether ordinary commands work.
const BASICS: &str = "exec 2>&1; busybox grep -E '^Seccomp(_filters)?:' /proc/self/status; \
    busybox ls / >/dev/null && echo ls-ok; busybox cat /etc/passwd | busybox head -n 1; \
    busybox mkdir /made && echo mkdir-ok";

/// What the built-in profile refuses: a key in the session keyring, a user
/// namespace, a personality that turns ASLR off, TIOCSTI (also with bits
/// above the 32 the kernel reads), clone3 (ENOSYS, so that glibc falls
/// back to clone); and what it leaves: the personality query and
/// PER_LINUX32.
const PROBE: &str = r##"exec 2>&1
/usr/bin/keyctl add user rcfs-k v @s >/dev/null && echo key-added
busybox unshare -U true && echo userns-made
busybox linux32 true && echo linux32-ok
/usr/bin/python3 -c '
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def call(f, *a):
    r = f(*a)
    return r if r != -1 else -ctypes.get_errno()
u = ctypes.c_ulong
print("personality-norandom", call(libc.personality, u(0x40000)))
print("personality-query-ok", call(libc.personality, u(0xffffffff)) >= 0)
print("tiocsti", call(libc.ioctl, 0, u(0x5412), b"#"))
print("tiocsti-high", call(libc.ioctl, 0, u(0x100005412), b"#"))
libc.syscall.restype = ctypes.c_long
print("clone3", call(libc.syscall, u(435), None, u(0)))
'
"##;

fn run_probe(f: &Fixture, opt: &str, probe: &str) -> String {
    let r = f.run(&[
        "--rm",
        "--security-opt",
        opt,
        "-v",
        "/usr:/usr:ro",
        "-v",
        &format!("{probe}:/probe.sh:ro"),
        &f.image,
        "/bin/sh",
        "/probe.sh",
    ]);
    assert_eq!(code(&r), Some(0), "{opt}: {} {}", r.stdout, r.stderr);
    r.stdout
}

/// By default the command has a filter (podman's profile on this host),
/// and ordinary commands work; `seccomp=unconfined` runs it without one.
#[test]
fn the_command_runs_under_a_seccomp_filter_by_default() {
    let f = fixture(150);
    let r = f.run(&["--rm", &f.image, "/bin/sh", "-c", BASICS]);
    assert_eq!(code(&r), Some(0), "{} {}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("Seccomp:\t2\n") && r.stdout.contains("Seccomp_filters:\t1\n"),
        "{}",
        r.stdout
    );
    for ok in ["ls-ok", "root:x:0:0:", "mkdir-ok"] {
        assert!(r.stdout.contains(ok), "{ok}: {}", r.stdout);
    }
    // The compiled program is kept in the store (0700 dir, 0600 file); one
    // that is not a program is compiled again.
    let kept = f.store().join("seccomp");
    assert_eq!(std::fs::metadata(&kept).unwrap().mode() & 0o7777, 0o700);
    let files: Vec<_> = std::fs::read_dir(&kept).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = files[0].path();
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o7777, 0o600);
    assert!(file.to_str().unwrap().ends_with(".bpf"), "{file:?}");
    std::fs::write(&file, "junk").unwrap();
    let r = f.run(&["--rm", &f.image, "/bin/sh", "-c", BASICS]);
    assert_eq!(code(&r), Some(0), "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Seccomp:\t2\n"), "{}", r.stdout);
    let again = std::fs::read(&file).unwrap();
    assert!(again.len() > 8 && again.len() % 8 == 0, "{}", again.len());
    let r = f.run(&[
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        &f.image,
        "/bin/sh",
        "-c",
        BASICS,
    ]);
    assert_eq!(code(&r), Some(0), "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Seccomp:\t0\n"), "{}", r.stdout);
    assert!(r.stdout.contains("mkdir-ok"), "{}", r.stdout);
}

/// rcfs's built-in profile refuses what matters on a shared host with
/// EPERM (clone3 with ENOSYS); the same probe unconfined gets each of
/// them, so it is the filter that refuses.
#[test]
fn the_builtin_profile_refuses_what_matters_on_a_shared_host() {
    let f = fixture(151);
    let probe = script(&f, "probe.sh", PROBE);
    let builtin = script(&f, "builtin.json", BUILTIN);
    let out = run_probe(&f, &format!("seccomp={builtin}"), &probe);
    assert!(!out.contains("key-added"), "{out}");
    assert!(!out.contains("userns-made"), "{out}");
    assert!(
        out.matches("Operation not permitted").count() >= 2,
        "keyctl and unshare: {out}"
    );
    for want in [
        "linux32-ok",
        "personality-norandom -1\n",
        "personality-query-ok True",
        "tiocsti -1\n",
        "tiocsti-high -1\n",
        "clone3 -38\n",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // Under its filter, ordinary commands work.
    let basics = script(&f, "basics.sh", BASICS);
    let out = run_probe(&f, &format!("seccomp={builtin}"), &basics);
    assert!(out.contains("Seccomp:\t2\n"), "{out}");
    for ok in ["ls-ok", "root:x:0:0:", "mkdir-ok"] {
        assert!(out.contains(ok), "{ok}: {out}");
    }
    let out = run_probe(&f, "seccomp=unconfined", &probe);
    for want in [
        "key-added",
        "userns-made",
        "linux32-ok",
        "personality-query-ok True",
        // No terminal on stdin: the kernel's own answer.
        "tiocsti -25\n",
    ] {
        assert!(out.contains(want), "unconfined, {want}: {out}");
    }
    assert!(!out.contains("personality-norandom -1\n"), "{out}");
    assert!(!out.contains("clone3 -38\n"), "{out}");
}

/// The default is the profile podman would use: with podman's profile (this
/// host's /usr/share/containers/seccomp.json) adding a key is ENOSYS, as its
/// allow list does not name add_key; an /etc/containers/seccomp.json is
/// taken over it (here one that makes mkdir EDQUOT); without either (hidden
/// under a tmpfs, in a mount namespace of the test's own), rcfs's built-in
/// one: adding a key is EPERM.
#[test]
fn the_default_profile_is_the_one_podman_would_use() {
    let f = fixture(154);
    let probe = script(
        &f,
        "key.sh",
        "exec 2>&1; busybox grep '^Seccomp:' /proc/self/status; \
         /usr/bin/keyctl add user rcfs-k v @s >/dev/null && echo key-added; \
         busybox mkdir /made && echo mkdir-ok; true",
    );
    let default_run = format!(
        "{RCFS} --root {} run --rm --tls-verify=false -v /usr:/usr:ro -v {probe}:/key.sh:ro \
         {} /bin/sh /key.sh",
        f.store().display(),
        f.image
    );
    assert!(
        std::path::Path::new("/usr/share/containers/seccomp.json").exists(),
        "this test compares with podman's profile: install containers-common (skopeo's dependency)"
    );
    let r = run(Command::new("sh").args(["-c", &default_run]), T);
    assert_eq!(code(&r), Some(0), "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Seccomp:\t2"), "{}", r.stdout);
    assert!(
        r.stdout.contains("Function not implemented"),
        "{}",
        r.stdout
    );
    let hidden = format!("mount -t tmpfs none /usr/share/containers && exec {default_run}");
    let r = run(
        Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &hidden]),
        T,
    );
    assert_eq!(code(&r), Some(0), "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Seccomp:\t2"), "{}", r.stdout);
    assert!(r.stdout.contains("Operation not permitted"), "{}", r.stdout);
    assert!(!r.stdout.contains("key-added"), "{}", r.stdout);
    assert!(r.stdout.contains("mkdir-ok"), "{}", r.stdout);
    let admins = script(
        &f,
        "admins.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}]}"#,
    );
    let overridden = format!(
        "mount -t tmpfs none /etc/containers && cp {admins} /etc/containers/seccomp.json && \
         exec {default_run}"
    );
    let r = run(
        Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &overridden]),
        T,
    );
    assert_eq!(code(&r), Some(0), "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Disk quota exceeded"), "{}", r.stdout);
    assert!(!r.stdout.contains("mkdir-ok"), "{}", r.stdout);
}

/// A profile of the user's: what it denies fails with the errno it names
/// (EDQUOT here); the rest works. `rcfs start` runs the container again
/// under the profile it was made with.
#[test]
fn a_profile_file_decides_and_start_keeps_it() {
    let f = fixture(152);
    let profile = script(
        &f,
        "nomkdir.json",
        r#"{"comment": "mkdir fails with EDQUOT", "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat", "a_syscall_of_tomorrow"],
                          "action": "SCMP_ACT_ERRNO", "errnoRet": 122}]}"#,
    );
    let opt = format!("seccomp={profile}");
    let cmd = "exec 2>&1; busybox mkdir /d && echo mkdir-ok; \
               busybox touch /f && echo touch-ok; busybox grep '^Seccomp:' /proc/self/status";
    let r = f.run(&[
        "--name",
        "keep",
        "--security-opt",
        &opt,
        &f.image,
        "/bin/sh",
        "-c",
        cmd,
    ]);
    assert_eq!(code(&r), Some(0), "{} {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("mkdir-ok"), "{}", r.stdout);
    assert!(r.stdout.contains("Disk quota exceeded"), "{}", r.stdout);
    assert!(r.stdout.contains("touch-ok"), "{}", r.stdout);
    assert!(r.stdout.contains("Seccomp:\t2"), "{}", r.stdout);
    let r = f.rcfs(&["start", "-a", "keep"]);
    assert_eq!(code(&r), Some(0), "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Disk quota exceeded"), "{}", r.stdout);
    assert!(r.stdout.contains("touch-ok"), "{}", r.stdout);
}

/// A profile rcfs cannot use fails the start with 125 and says which
/// profile and what is wrong, before anything is made.
#[test]
fn a_bad_profile_fails_the_start_clearly() {
    let f = fixture(153);
    let bad_json = script(&f, "bad.json", "{\"defaultAction\": ");
    let bad_action = script(
        &f,
        "action.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_MAYBE"}]}"#,
    );
    let missing = f.dir.path().join("missing.json").display().to_string();
    for (path, says) in [
        (&bad_json, "not a profile"),
        (&bad_action, "unknown action \"SCMP_ACT_MAYBE\""),
        (&missing, "No such file"),
    ] {
        let r = f.run(&[
            "--name",
            "bad",
            "--security-opt",
            &format!("seccomp={path}"),
            &f.image,
            "/bin/true",
        ]);
        assert_eq!(code(&r), Some(125), "{path}: {} {}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains(&format!("the seccomp profile {path}")) && r.stderr.contains(says),
            "{path}: {}",
            r.stderr
        );
        let ps = f.rcfs(&["ps", "-a"]);
        assert!(!ps.stdout.contains("bad"), "{}", ps.stdout);
    }
    let r = f.run(&["--security-opt", "label=disable", &f.image, "/bin/true"]);
    assert_ne!(code(&r), Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("unsupported security option"),
        "{}",
        r.stderr
    );
}
