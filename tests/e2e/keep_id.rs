//! `rcfs run --userns=keep-id`, as a user made by `useradd` (with subuid
//! ranges): the user's uid and gid are the same numbers in the container,
//! the command runs as the user, the image's files keep their owners
//! (root's stay root's, the user cannot write them), and files the command
//! writes into a bind-mounted project dir are the user's on the host.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use crate::containers::{code, Fixture};
use crate::mounts::{run, RCFS};

const T: std::time::Duration = std::time::Duration::from_secs(180);

#[test]
fn keep_id_gives_the_user_their_own_ids_inside() {
    let f = Fixture::new(150, "gzip");
    let user = "rcfs-e2e-keep";
    if !Command::new("id")
        .arg(user)
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let r = run(Command::new("useradd").args(["-m", user]), T);
        assert!(r.success(), "useradd: {}", r.stderr);
    }
    let id = |flag: &str| -> u32 {
        let o = Command::new("id").args([flag, user]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let home = f.dir.path().join("keephome");
    let proj = f.dir.path().join("proj");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join("a"), "mine\n").unwrap();
    let _ = Command::new("chmod").args(["666", "/dev/fuse"]).status();
    let _ = Command::new("chown")
        .args(["-R", &format!("{user}:"), f.dir.path().to_str().unwrap()])
        .status();
    let as_user = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            RCFS,
        ]);
        c.args(args).env("HOME", &home).env_remove("XDG_DATA_HOME");
        run(&mut c, T)
    };
    let bind = format!("{}:/proj", proj.display());
    let script = "busybox id -u; busybox id -g; busybox stat -c %u:%g / /bin/busybox /proj/a; \
                  echo new > /proj/b; busybox touch /etc/x 2>/dev/null || echo etc-denied";
    let r = as_user(&[
        "run",
        "--rm",
        "--tls-verify=false",
        "--userns=keep-id",
        "-v",
        &bind,
        &f.image,
        "/bin/sh",
        "-c",
        script,
    ]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!("{uid}\n{gid}\n0:0\n0:0\n{uid}:{gid}\netc-denied\n"),
        "{}",
        r.stderr
    );
    let b = std::fs::metadata(proj.join("b")).unwrap();
    assert_eq!(
        (b.uid(), b.gid()),
        (uid, gid),
        "the project file is the user's"
    );

    // -u still decides; a detached keep-id container's exec runs as the user.
    let r = as_user(&[
        "run",
        "--rm",
        "--tls-verify=false",
        "--userns=keep-id",
        "-u",
        "0",
        &f.image,
        "/bin/busybox",
        "id",
        "-u",
    ]);
    assert_eq!(r.stdout, "0\n", "{}", r.stderr);
    as_user(&[
        "run",
        "-d",
        "--name",
        "k",
        "--tls-verify=false",
        "--userns=keep-id",
        &f.image,
        "/bin/sh",
        "-c",
        "while :; do busybox sleep 0.1; done",
    ])
    .expect_ok("run -d keep-id");
    let r = as_user(&["exec", "k", "/bin/busybox", "id", "-u"]);
    assert_eq!(r.stdout, format!("{uid}\n"), "{}", r.stderr);
    let r = as_user(&["exec", "-u", "0", "k", "/bin/busybox", "id", "-u"]);
    assert_eq!(r.stdout, "0\n", "{}", r.stderr);
    as_user(&["stop", "-t", "1", "k"]).expect_ok("stop");
    // Its upper dir holds the user namespace's ids: commit says it cannot.
    let r = as_user(&["commit", "k", "localhost/k:v1"]);
    assert!(!r.success() && r.stderr.contains("keep-id"), "{}", r.stderr);
    as_user(&["rm", "k"]).expect_ok("rm");

    // The init of a keep-id container takes root of its namespace, which
    // clears its parent-death signal: the watcher still takes it down
    // with a killed monitor.
    as_user(&[
        "run",
        "-d",
        "--name",
        "w",
        "--init",
        "--tls-verify=false",
        "--userns=keep-id",
        &f.image,
        "/bin/busybox",
        "sleep",
        "1150",
    ])
    .expect_ok("run -d --init keep-id");
    let sleeps = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| c.starts_with(b"/bin/busybox\0sleep\x001150"))
            })
            .count()
    };
    let t0 = std::time::Instant::now();
    while sleeps() == 0 && t0.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(sleeps(), 1);
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(home.join(".local/share/rcfs/containers/w/container.json")).unwrap(),
    )
    .unwrap();
    let monitor = rec["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    while sleeps() > 0 && t0.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(sleeps(), 0, "the container outlived its monitor");

    // Root's ids are its own already: refused, as podman refuses it.
    let r = f.run(&["--rm", "--userns=keep-id", &f.image, "/bin/true"]);
    assert_eq!(code(&r), Some(125), "{}", r.stderr);
    assert!(r.stderr.contains("ordinary users"), "{}", r.stderr);
}
