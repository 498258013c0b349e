//! A container gets nothing of its caller's that it could turn against
//! the caller or the host: no controlling terminal of the host, not the
//! caller's session keyring, device nodes that are not the host's to
//! change, only the groups its user has in the image, and an init that
//! keeps no capability it does not need. Each case is the attack, tried
//! as the issue that found it did, run as root and (where the mechanism
//! differs) as an unprivileged user.
//!
//! The image is the standard one with Debian's `/lib` and `/lib64` links
//! and an `/etc/passwd` and `/etc/group`; tests that need a tool busybox
//! lacks (python3's TIOCSTI, keyutils' keyctl) bind the host's `/usr` in
//! read-only.

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use crate::containers::{code, Fixture};
use crate::harness::temp_dir;
use crate::mounts::{require_privileges, run, RCFS};
use crate::registry::{standard_layers, tar_layer, write_layout, Item, Registry};

const T: Duration = Duration::from_secs(180);

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str =
    "root:x:0:\napp:x:1000:\nwheel:x:10:app\nvideo:x:44:other,app\nstaff:x:50:other\n";

/// The image (see the module doc) in a registry of its own.
pub(crate) fn fixture(seed: u64) -> Fixture {
    require_privileges();
    let dir = temp_dir();
    let mut layers = standard_layers(seed);
    layers.push(tar_layer(&[
        Item::Symlink("lib", "usr/lib"),
        Item::Symlink("lib64", "usr/lib64"),
        Item::Dir("etc", 0o755),
        Item::File("etc/passwd", PASSWD.into(), 0o644),
        Item::File("etc/group", GROUP.into(), 0o644),
    ]));
    let layout = dir.path().join("layout");
    write_layout(&layout, "v1", &layers);
    let registry = Registry::start();
    let image = registry.push(&layout, "v1", "isolation", "gzip");
    Fixture {
        dir,
        registry,
        image,
    }
}

/// Writes `text` to `name` in the fixture's dir (readable by all); its path.
pub(crate) fn script(f: &Fixture, name: &str, text: &str) -> String {
    let p = f.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p.display().to_string()
}

/// The container's side of the terminal attack: open /dev/tty, read the
/// keys typed into the terminal on stdout, push a character into it with
/// TIOCSTI, and say which session it is in.
const TTY_PROBE: &str = r##"exec 2>&1
echo probe > /dev/tty && echo tty-opened
echo "sid=$(busybox cut -d' ' -f6 /proc/$$/stat) pid=$$"
busybox grep flags /proc/self/fdinfo/1; busybox timeout 2 busybox head -c 1 <&1 && echo read-stdout
busybox tty
/usr/bin/python3 -c '
import fcntl, termios
try:
    fcntl.ioctl(1, termios.TIOCSTI, b"#")
    print("tiocsti-worked")
except OSError as e:
    print("tiocsti-refused", e.errno)
'
"##;

/// Finding 1: run from a shell with a controlling terminal (`script`
/// gives it one), the command is in a session of its own (the session
/// leader, not the caller's session, which its pid namespace shows as 0),
/// opening /dev/tty fails with ENXIO, its stdout (the caller's terminal)
/// is write-only and a read from it fails, and TIOCSTI into it is refused
/// (EPERM). With -t, /dev/tty is the container's own pty.
#[test]
fn the_command_has_no_terminal_of_the_host() {
    let f = fixture(120);
    let probe = script(&f, "probe.sh", TTY_PROBE);
    let in_terminal = |flags: &str| {
        let inner = format!(
            "{RCFS} --root {} run --rm {flags} --tls-verify=false -v /usr:/usr:ro \
             -v {probe}:/probe.sh:ro {} /bin/sh /probe.sh",
            f.store().display(),
            f.image
        );
        run(
            Command::new("script").args(["-qec", &inner, "/dev/null"]),
            T,
        )
    };
    let r = in_terminal("");
    assert_eq!(code(&r), Some(0), "{} {}", r.stdout, r.stderr);
    let out = r.stdout.replace('\r', "");
    assert!(!out.contains("tty-opened"), "{out}");
    assert!(out.contains("No such device or address"), "{out}");
    assert!(
        out.contains("sid=1 pid=1"),
        "not a session of its own: {out}"
    );
    // Under --init, the command's session is its own too, not the init's.
    let r = in_terminal("--init");
    assert_eq!(code(&r), Some(0), "{} {}", r.stdout, r.stderr);
    let init_out = r.stdout.replace('\r', "");
    assert!(init_out.contains("sid=2 pid=2"), "{init_out}");
    assert!(init_out.contains("tiocsti-refused 1"), "{init_out}");
    assert!(out.contains("not a tty"), "{out}");
    // Write-only (O_WRONLY, octal 1), and a read of it fails at once
    // (rather than waiting for keys).
    assert!(out.contains("flags:\t0100001"), "{out}");
    assert!(
        !out.contains("read-stdout") && out.contains("head: standard input: "),
        "{out}"
    );
    assert!(out.contains("tiocsti-refused 1"), "{out}");
    // With -t: the container's own pty, its controlling terminal.
    let r = in_terminal("-t");
    assert_eq!(code(&r), Some(0), "{} {}", r.stdout, r.stderr);
    let out = r.stdout.replace('\r', "");
    assert!(
        out.contains("probe\ntty-opened") && out.contains("/dev/pts/0"),
        "{out}"
    );
    assert!(out.contains("sid=1 pid=1"), "{out}");
    assert!(out.contains("tiocsti-worked"), "its own pty: {out}");
}

/// Finding 2: a key in the caller's session keyring is not the
/// container's to find, as root or as another user, and a key the
/// container adds to its session keyring does not land in the caller's.
/// Unconfined: the seccomp profiles deny add_key (podman's, ENOSYS) or
/// every keyring call (rcfs's built-in, EPERM); this is the keyring the
/// init joins, which holds without them.
#[test]
fn the_container_has_a_session_keyring_of_its_own() {
    let f = fixture(121);
    let probe = script(
        &f,
        "keys.sh",
        "exec 2>&1\n\
         /usr/bin/keyctl search @s user rcfs-probe && echo found-callers-key\n\
         /usr/bin/keyctl add user rcfs-planted x @s >/dev/null && echo planted\n",
    );
    for user in ["0", "4242"] {
        let host = script(
            &f,
            "host.sh",
            &format!(
                "keyctl add user rcfs-probe secret @s >/dev/null || exit 99\n\
                 {RCFS} --root {} run --rm --tls-verify=false -u {user} -v /usr:/usr:ro \
                 --security-opt seccomp=unconfined -v {probe}:/keys.sh:ro {} /bin/sh /keys.sh\n\
                 keyctl search @s user rcfs-planted >/dev/null 2>&1 && echo planted-in-callers\n\
                 exit 0\n",
                f.store().display(),
                f.image
            ),
        );
        // A session keyring of the test's own, with the probe key in it.
        let r = run(
            Command::new("keyctl").args(["session", "-", "/bin/sh", &host]),
            T,
        );
        assert_eq!(code(&r), Some(0), "-u {user}: {} {}", r.stdout, r.stderr);
        assert!(
            !r.stdout.contains("found-callers-key"),
            "-u {user}: {}",
            r.stdout
        );
        assert!(r.stdout.contains("planted"), "-u {user}: {}", r.stdout);
        assert!(
            !r.stdout.contains("planted-in-callers"),
            "-u {user}: {}",
            r.stdout
        );
    }
}

/// What a container does to its /dev: the nodes work (null takes writes,
/// zero and urandom read, full says ENOSPC), then it tries to chmod and
/// chown null and full.
const DEV_PROBE: &str = "exec 2>&1; \
    echo hi > /dev/null && echo null-ok; \
    echo zero=$(busybox head -c 5 /dev/zero | busybox wc -c) \
         urandom=$(busybox head -c 7 /dev/urandom | busybox wc -c); \
    echo x > /dev/full || echo full-refused; \
    busybox ls /dev | busybox tr '\\n' ' '; echo; \
    busybox stat -c '%n %F %t:%T %a' /dev/null /dev/full /dev/tty; \
    busybox chmod 000 /dev/full /dev/null; busybox chown 65534 /dev/full /dev/null; \
    busybox stat -c 'after %n %a %u' /dev/null /dev/full; true";

/// The host's /dev/null and /dev/full as (mode, uid, gid).
fn host_nodes() -> Vec<(u32, u32, u32)> {
    ["/dev/null", "/dev/full"]
        .iter()
        .map(|n| {
            let m = std::fs::metadata(n).unwrap();
            (m.mode(), m.uid(), m.gid())
        })
        .collect()
}

/// The host's /dev/null and /dev/full, if a container changed them from
/// what they are on every host (0666 root:root character devices), which
/// they are made again at once, before anything is asserted.
fn host_nodes_changed() -> Option<Vec<(u32, u32, u32)>> {
    let now = host_nodes();
    let want = vec![(0o20666, 0, 0); 2];
    if now == want {
        return None;
    }
    for n in ["/dev/null", "/dev/full"] {
        std::fs::set_permissions(n, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        std::os::unix::fs::chown(n, Some(0), Some(0)).unwrap();
    }
    Some(now)
}

/// Finding 3: the chmod and chown of /dev/null and /dev/full a container
/// may try leave the host's nodes as they were: real root's container
/// (identity-mapped, whose root owns the host's root-owned nodes) has
/// nodes of its own; an ordinary user's has the host's, bound, which its
/// namespace cannot change. The nodes work in both.
#[test]
fn a_containers_dev_is_not_the_hosts() {
    let f = fixture(122);
    assert_eq!(
        host_nodes_changed(),
        None,
        "the host's nodes were changed already"
    );
    let home = f.dir.path().join("home");
    let root = f.run(&["--rm", &f.image, "/bin/sh", "-c", DEV_PROBE]);
    let root_changed = host_nodes_changed();
    let user = f.run_rootless(&home, &["--rm", &f.image, "/bin/sh", "-c", DEV_PROBE]);
    let user_changed = host_nodes_changed();
    assert_eq!(root_changed, None, "root: {}", root.stdout);
    assert_eq!(user_changed, None, "user: {}", user.stdout);
    for (who, r) in [("root", &root), ("user", &user)] {
        assert_eq!(code(r), Some(0), "{who}: {} {}", r.stdout, r.stderr);
        let out = &r.stdout;
        for want in [
            "null-ok",
            "zero=5 urandom=7",
            "No space left on device",
            "full-refused",
            "/dev/null character special file 1:3 666",
            "/dev/full character special file 1:7 666",
            "/dev/tty character special file 5:0 666",
        ] {
            assert!(out.contains(want), "{who}: no {want:?} in {out}");
        }
        for entry in [
            "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
            "stdout", "tty", "urandom", "zero",
        ] {
            assert!(
                out.split_whitespace().any(|w| w == entry),
                "{who}: /dev lacks {entry}: {out}"
            );
        }
    }
    // Root's container changed its own nodes; the user's was refused.
    assert!(
        root.stdout.contains("after /dev/null 0 65534"),
        "{}",
        root.stdout
    );
    assert!(
        user.stdout
            .contains("chmod: /dev/full: Read-only file system")
            && user.stdout.contains("after /dev/null 666 65534"),
        "{}",
        user.stdout
    );
}

/// Finding 4: run by a root with supplementary groups 4 and 27, the
/// command has only its user's groups in the image: for `app` (uid 1000)
/// its gid and the groups that list it, for a uid the image does not know
/// its gid alone, for root (listed nowhere) 0. The same for an ordinary
/// user with subuid ranges (newgidmap allows setgroups in its namespace).
/// An ordinary user without ranges (only its own gid mapped) cannot drop
/// its groups (the kernel denies setgroups there): they stay, unmapped,
/// shown as 65534, and the run goes on.
#[test]
fn the_command_has_only_its_users_groups() {
    let f = fixture(123);
    let with_groups = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--groups", "4,27", RCFS, "--root"])
            .arg(f.store())
            .args(["run", "--rm", "--tls-verify=false"])
            .args(args);
        run(&mut c, T)
    };
    for (user, want) in [
        (Some("app"), "1000 10 44"),
        (Some("1000:50"), "50 10 44"),
        (Some("4242"), "0"),
        (Some("4242:4243"), "4243"),
        (None, "0"),
    ] {
        let mut args = Vec::new();
        if let Some(u) = user {
            args.extend(["-u", u]);
        }
        args.extend([f.image.as_str(), "/bin/busybox", "id", "-G"]);
        let r = with_groups(&args);
        assert_eq!(code(&r), Some(0), "{user:?}: {}", r.stderr);
        assert_eq!(r.stdout.trim(), want, "{user:?}: {}", r.stderr);
    }
    // An ordinary user with subuid ranges, in groups 4 and 27.
    let user = "rcfs-e2e-sub";
    if !Command::new("id")
        .arg(user)
        .output()
        .unwrap()
        .status
        .success()
    {
        let r = run(Command::new("useradd").args(["-m", user]), T);
        assert!(r.success(), "useradd: {}", r.stderr);
    }
    let home = f.dir.path().join("subhome");
    std::fs::create_dir_all(&home).unwrap();
    let _ = Command::new("chmod").args(["666", "/dev/fuse"]).status();
    let _ = Command::new("chown")
        .args(["-R", &format!("{user}:"), f.dir.path().to_str().unwrap()])
        .status();
    let r = run(
        Command::new("setpriv")
            .args([
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--groups=4,27",
                RCFS,
                "run",
                "--rm",
                "--tls-verify=false",
                "-u",
                "app",
                &f.image,
                "/bin/busybox",
                "id",
                "-G",
            ])
            .env("HOME", &home)
            .env_remove("XDG_DATA_HOME"),
        T,
    );
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "1000 10 44", "{}", r.stderr);
    // Without ranges (uid 65534, only its own ids mapped): the groups it
    // has stay, as nobody, and the command runs.
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--groups=4,27", RCFS])
        .args(["run", "--rm", "--tls-verify=false", &f.image])
        .args(["/bin/busybox", "id", "-G"])
        .env("HOME", f.dir.path().join("home"))
        .env_remove("XDG_DATA_HOME");
    std::fs::create_dir_all(f.dir.path().join("home")).unwrap();
    let _ = Command::new("chown")
        .args(["-R", "65534:65534", f.dir.path().to_str().unwrap()])
        .status();
    let r = run(&mut c, T);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "0 65534 65534", "{}", r.stderr);
}

/// Finding 5 (the init): under --init, once the command runs, the init (pid 1) keeps
/// CAP_KILL alone (to pass signals on to a command of another user), in
/// its bounding, permitted and effective sets, as root and rootless; the
/// command keeps podman's set.
#[test]
fn the_init_keeps_only_cap_kill() {
    let f = fixture(124);
    let probe = "busybox grep Cap /proc/1/status; busybox grep CapEff /proc/self/status";
    let home = f.dir.path().join("home");
    let root = f.run(&["--rm", "--init", &f.image, "/bin/sh", "-c", probe]);
    let user = f.run_rootless(&home, &["--rm", "--init", &f.image, "/bin/sh", "-c", probe]);
    for (who, r) in [("root", &root), ("user", &user)] {
        assert_eq!(code(r), Some(0), "{who}: {}", r.stderr);
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(
            lines,
            [
                "CapInh:\t0000000000000000",
                "CapPrm:\t0000000000000020",
                "CapEff:\t0000000000000020",
                "CapBnd:\t0000000000000020",
                "CapAmb:\t0000000000000000",
                "CapEff:\t00000000800405fb",
            ],
            "{who}: {}",
            r.stderr
        );
    }
    // A command of another user still gets the signals rcfs passes on
    // (the init needs CAP_KILL for that).
    let mut child = Command::new(RCFS)
        .args(["--root", f.store().to_str().unwrap(), "run", "--rm"])
        .args([
            "--tls-verify=false",
            "-u",
            "1000",
            &f.image,
            "/bin/sh",
            "-c",
        ])
        .arg("trap 'echo got-term; exit 9' TERM; echo ready; busybox sleep 30 & wait")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(child.wait().unwrap().code(), Some(9));
}

/// A user whose terminal is not theirs to open again (inherited across
/// `su` or `sudo -u`: here a pty of root's, from `script`) still runs a
/// container without -t: what the container writes reaches the terminal
/// through a pipe rcfs relays, and the container never holds the terminal.
#[test]
fn a_terminal_the_user_cannot_reopen_is_relayed_through_a_pipe() {
    let f = fixture(124);
    let home = f.dir.path().join("home");
    // Makes the user's store dirs (and runs once without a terminal).
    let r = f.run_rootless(&home, &["--rm", &f.image, "/bin/sh", "-c", "exit 0"]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    let inner = format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups env HOME={} {RCFS} run --rm \
         --tls-verify=false {} /bin/sh -c 'echo out-relayed; echo err-relayed >&2; \
         ls -l /proc/self/fd/1 /proc/self/fd/2; test -t 1 || echo stdout-not-a-tty'",
        home.display(),
        f.image
    );
    let r = run(
        Command::new("script").args(["-qec", &inner, "/dev/null"]),
        T,
    );
    let out = r.stdout.replace('\r', "");
    assert_eq!(code(&r), Some(0), "{out} {}", r.stderr);
    for want in ["out-relayed", "err-relayed", "stdout-not-a-tty", "pipe:"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(
        !out.contains("/dev/pts"),
        "the container held the terminal: {out}"
    );
}
