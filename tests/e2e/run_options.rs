//! The `rcfs run` options a podman user types, each with podman's meaning:
//! `--entrypoint`, `--env-file`, `--cap-add`/`--cap-drop`, `--group-add`,
//! `--read-only`, `--tmpfs`, `--ulimit`, `--pull`, `--stop-signal`; and
//! what rcfs does not support is an error that says so (125).

use crate::containers::{code, Fixture};

#[test]
fn the_options_podman_users_type_do_what_podman_does() {
    let f = Fixture::new(140, "gzip");
    let img = f.image.as_str();
    let ok = |args: &[&str]| {
        let r = f.run(&[&["--rm"], args].concat());
        assert_eq!(code(&r), Some(0), "{args:?}: {}", r.stderr);
        r.stdout
    };

    // --entrypoint: a command or a JSON array; the image's Cmd goes with
    // it, arguments follow it.
    assert_eq!(
        ok(&["--entrypoint", r#"["/bin/busybox","echo","ep"]"#, img, "a"]),
        "ep a\n"
    );
    assert_eq!(
        ok(&["--entrypoint", "/bin/busybox", img, "echo", "x"]),
        "x\n"
    );

    // --env-file, then -e over it; KEY alone takes the caller's value.
    let env = f.dir.path().join("env");
    std::fs::write(&env, "# a comment\nA=1\n\nB=file\nFROM_CALLER\n").unwrap();
    let mut c = std::process::Command::new(crate::mounts::RCFS);
    c.args([
        "--root",
        f.store().to_str().unwrap(),
        "run",
        "--rm",
        "--tls-verify=false",
    ])
    .args(["--env-file", env.to_str().unwrap(), "-e", "B=flag", img])
    .args(["/bin/sh", "-c", "echo $A $B $FROM_CALLER"])
    .env("FROM_CALLER", "caller");
    let r = crate::mounts::run(&mut c, std::time::Duration::from_secs(120));
    assert_eq!(r.stdout, "1 flag caller\n", "{}", r.stderr);

    // Capabilities: the bounding set is podman's default, minus the
    // dropped, plus the added.
    let bnd = |args: &[&str]| {
        let out = ok(&[
            args,
            &[img, "/bin/busybox", "grep", "CapBnd", "/proc/self/status"],
        ]
        .concat());
        u64::from_str_radix(out.trim().rsplit('\t').next().unwrap(), 16).unwrap()
    };
    assert_eq!(bnd(&[]), 0x8004_05fb);
    assert_eq!(
        bnd(&["--cap-drop", "ALL", "--cap-add", "net_bind_service"]),
        1 << 10
    );
    assert_eq!(
        bnd(&["--cap-add", "CAP_NET_ADMIN", "--cap-drop", "chown"]),
        (0x8004_05fb | 1 << 12) & !1
    );

    // --group-add: gids, and names of the image's groups (this image has
    // no /etc/group: a name is an error that says so).
    let out = ok(&[
        "-u",
        "1000",
        "--group-add",
        "44",
        "--group-add",
        "7",
        img,
        "/bin/busybox",
        "id",
        "-G",
    ]);
    let mut groups: Vec<&str> = out.split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, ["0", "44", "7"], "{out}");
    let r = f.run(&["--rm", "--group-add", "video", img, "/bin/true"]);
    assert_eq!(code(&r), Some(125), "{}", r.stderr);
    assert!(
        r.stderr.contains("--group-add video: no such group"),
        "{}",
        r.stderr
    );

    // --read-only with tmpfs where programs write; --tmpfs with options.
    let out = ok(&[
        "--read-only",
        "--tmpfs",
        "/data:size=1m,mode=700",
        img,
        "/bin/sh",
        "-c",
        "busybox touch /x 2>/dev/null || echo ro; busybox touch /tmp/t /run/r /var/tmp/v /data/d && echo tmp-ok; \
         busybox stat -c %a /data; busybox grep ' /data ' /proc/mounts",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["ro", "tmp-ok", "700"], "{out}");
    assert!(
        lines[3].contains("size=1024k")
            && lines[3].contains("nosuid,nodev")
            && !lines[3].contains("noexec"),
        "podman 4.3's --tmpfs is exec unless noexec: {out}"
    );
    let out = ok(&[
        "--tmpfs",
        "/x:noexec",
        img,
        "/bin/busybox",
        "grep",
        " /x ",
        "/proc/mounts",
    ]);
    assert!(out.contains("noexec"), "{out}");

    // A mount target that leads into the container's /proc, /dev or /sys
    // (here a symlink a container made, committed into an image) is
    // refused, not mounted over them.
    f.run(&[
        "--name",
        "evil",
        img,
        "/bin/busybox",
        "ln",
        "-s",
        "/proc",
        "/evil",
    ])
    .expect_ok("make the symlink");
    f.rcfs(&["commit", "evil", "localhost/evil:v1"])
        .expect_ok("commit");
    let r = f.run(&["--rm", "--tmpfs", "/evil", "localhost/evil:v1", "/bin/true"]);
    assert_eq!(code(&r), Some(125), "{}", r.stderr);
    assert!(r.stderr.contains("leads into its /proc"), "{}", r.stderr);
    let r = f.run(&[
        "--rm",
        "-v",
        "/tmp:/evil/x",
        "localhost/evil:v1",
        "/bin/true",
    ]);
    assert_eq!(code(&r), Some(125), "{}", r.stderr);
    f.rcfs(&["rm", "evil"]).expect_ok("rm");

    // --ulimit.
    let out = ok(&[
        "--ulimit",
        "nofile=100:200",
        img,
        "/bin/sh",
        "-c",
        "ulimit -n; ulimit -Hn",
    ]);
    assert_eq!(out, "100\n200\n");

    // --pull=never with the image missing; --pull=always pulls.
    let other = format!("{}:nothere", img.rsplit_once(':').unwrap().0);
    let mut c = std::process::Command::new(crate::mounts::RCFS);
    c.args(["--root", f.dir.path().join("empty").to_str().unwrap()])
        .args([
            "run",
            "--rm",
            "--tls-verify=false",
            "--pull=never",
            img,
            "/bin/true",
        ]);
    let r = crate::mounts::run(&mut c, std::time::Duration::from_secs(120));
    assert_eq!(code(&r), Some(125), "{}", r.stderr);
    assert!(r.stderr.contains("--pull=never"), "{}", r.stderr);
    assert_eq!(
        ok(&["--pull=always", img, "/bin/busybox", "echo", "pulled"]),
        "pulled\n"
    );
    let r = f.run(&["--rm", "--pull=always", &other, "/bin/true"]);
    assert_eq!(code(&r), Some(125), "{}", r.stderr);

    // What cannot be done is an error that says so, before anything runs.
    for (args, says) in [
        (vec!["--cap-add", "NOPE"], "unknown capability"),
        (vec!["--ulimit", "bogus=1"], "unknown resource"),
        (vec!["--ulimit", "nofile=9:8"], "soft limit"),
        (vec!["--tmpfs", "relative"], "absolute"),
        (vec!["--tmpfs", "/t:exotic"], "does not support"),
        (vec!["--stop-signal", "SIGNOPE"], "no signal"),
        (vec!["--entrypoint", "[1,2]"], "JSON array of strings"),
        (vec!["--label", "nokey"], "KEY=VALUE"),
        (vec!["--no-such-option"], "unexpected argument"),
    ] {
        let r = f.run(&[&["--rm"], &args[..], &[img, "/bin/true"]].concat());
        assert!(!r.success(), "{args:?} succeeded");
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    }
    assert!(!f
        .store()
        .join("containers")
        .read_dir()
        .unwrap()
        .any(|_| true));
}

#[test]
fn stop_uses_the_containers_stop_signal() {
    let f = Fixture::new(141, "gzip");
    f.run(&[
        "-d",
        "--name",
        "s",
        "--stop-signal",
        "USR1",
        &f.image,
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM; trap 'exit 42' USR1; echo ready; while :; do busybox sleep 0.1; done",
    ])
    .expect_ok("run -d");
    let t0 = std::time::Instant::now();
    while !f.rcfs(&["logs", "s"]).stdout.contains("ready") {
        assert!(t0.elapsed() < std::time::Duration::from_secs(60));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    f.rcfs(&["stop", "s"]).expect_ok("stop");
    assert_eq!(f.rcfs(&["wait", "s"]).expect_ok("wait").stdout, "42\n");
}
