//! `rcfs run` given what cannot work: each gets exit code 125 (or 127 for
//! a command the image lacks) and a message that says what to do, and none
//! leaves a container, a mount or a process behind: an invalid `-u`, an
//! image no registry has, a registry that is down, a missing volume, no
//! usable /dev/fuse, user namespaces used up.

use std::process::Command;

use crate::containers::{code, Fixture};
use crate::mounts::{run, Run, RCFS};

const T: std::time::Duration = std::time::Duration::from_secs(180);

/// Nothing of a failed run is left in the store or mounted.
fn nothing_left(f: &Fixture, what: &str) {
    let containers = f.store().join("containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{what} left containers: {left:?}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let store = f.store().display().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&store)),
        "{what} left a mount:\n{mounts}"
    );
}

/// `rcfs --root STORE run --tls-verify=false ARGS` as root, wrapped in
/// `unshare ARGS... sh -c SCRIPT` where SCRIPT's `"$@"` is the rcfs command.
fn run_wrapped(f: &Fixture, unshare: &[&str], script: &str, args: &[&str]) -> Run {
    let mut c = Command::new("unshare");
    c.args(unshare).args(["sh", "-c", script, "sh", RCFS]);
    c.args([
        "--root",
        f.store().to_str().unwrap(),
        "run",
        "--tls-verify=false",
    ]);
    c.args(args);
    run(&mut c, T)
}

#[test]
fn bad_runs_say_why_and_leave_nothing() {
    let f = Fixture::new(95, "gzip");
    let img = f.image.as_str();
    let fails = |r: &Run, code_want: i32, says: &str, what: &str| {
        assert_eq!(code(r), Some(code_want), "{what}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{what}: {}", r.stderr);
        nothing_left(&f, what);
    };

    // An invalid -u: unknown to the image, or not a user at all.
    let r = f.run(&[
        "--name",
        "u",
        "-u",
        "nosuchuser",
        img,
        "/bin/sh",
        "-c",
        "true",
    ]);
    fails(&r, 125, "nosuchuser", "an unknown user");
    let r = f.run(&["--name", "u", "-u", "1:2:3", img, "/bin/sh", "-c", "true"]);
    fails(&r, 125, "1:2:3", "an invalid -u");

    // No such image in a registry that is up; a registry that is down.
    let missing = format!("{}/no/such:image", f.registry.host());
    let r = f.run(&["--name", "m", &missing, "/bin/sh"]);
    fails(&r, 125, "no/such", "an image the registry lacks");
    let r = f.run(&["--name", "d", "127.0.0.1:1/nothing:here", "/bin/sh"]);
    fails(&r, 125, "127.0.0.1:1", "a registry that is down");

    // A volume whose host side does not exist.
    let r = f.run(&["--name", "v", "-v", "/no/such/dir:/data", img, "/bin/sh"]);
    fails(&r, 125, "/no/such/dir", "a missing volume");

    // A command the image lacks: the container ran, and stays (no --rm).
    let r = f.run(&["--name", "c", img, "no-such-command"]);
    assert_eq!(code(&r), Some(127), "{}", r.stderr);
    assert!(f.store().join("containers/c/container.json").is_file());
    f.rcfs(&["rm", "c"]).expect_ok("rm");

    // No usable /dev/fuse (here: one that uid 65534 may not open).
    let dead = f.dir.path().join("dead-fuse");
    std::fs::write(&dead, b"").unwrap();
    std::fs::set_permissions(&dead, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let home = f.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let script = format!(
        "mount --bind {} /dev/fuse && HOME={} exec setpriv --reuid=65534 --regid=65534 \
         --clear-groups \"$@\"",
        dead.display(),
        home.display()
    );
    let mut c = Command::new("unshare");
    c.args([
        "-m",
        "sh",
        "-c",
        &script,
        "sh",
        RCFS,
        "run",
        "--tls-verify=false",
    ]);
    c.args(["--name", "f", img, "/bin/sh"]);
    let r = run(&mut c, T);
    assert_eq!(code(&r), Some(125), "{}", r.stderr);
    assert!(r.stderr.contains("/dev/fuse"), "{}", r.stderr);
    assert!(
        !home.join(".local/share/rcfs/containers/f").exists(),
        "nothing is made without /dev/fuse"
    );

    // User namespaces used up: inside a user namespace whose limit of
    // nested ones is 0 (the host's stays as it is).
    let r = run_wrapped(
        &f,
        &["--user", "--map-root-user"],
        "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"",
        &["--name", "n", img, "/bin/sh"],
    );
    fails(&r, 125, "user.max_user_namespaces", "no user namespaces");
}
