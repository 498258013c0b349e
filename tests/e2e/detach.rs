//! Containers that outlive the command line: `rcfs run -d` returns once the
//! command runs and prints the container's name; `rcfs logs` (its stdout
//! and stderr apart, `--tail`, `--timestamps`, `-f`), `rcfs kill`, `stop`
//! (the stop signal, then SIGKILL after `-t`) and `wait`; a monitor that is
//! killed takes its container with it and leaves nothing mounted. As root
//! and as an unprivileged user.

use std::time::{Duration, Instant};

use crate::containers::{code, Fixture};

/// Waits until `rcfs logs NAME` shows `want` on stdout.
fn logs_show(f: &Fixture, name: &str, want: &str) -> String {
    let t0 = Instant::now();
    loop {
        let r = f.rcfs(&["logs", name]);
        if r.stdout.contains(want) {
            return r.stdout;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{want:?} never logged: {} {}",
            r.stdout,
            r.stderr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn running(f: &Fixture, name: &str) -> bool {
    let r = f.rcfs(&["ps", "--json"]).expect_ok("ps");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == name && c["running"] == true)
}

#[test]
fn a_detached_container_logs_takes_signals_stops_and_is_waited_for() {
    let f = Fixture::new(130, "gzip");
    let img = f.image.as_str();
    let script = "echo out; echo err >&2; printf 'no newline'; echo; \
                  trap 'echo usr1' USR1; trap 'echo bye; exit 3' TERM; \
                  echo ready; while :; do busybox sleep 0.1; done";
    let t0 = Instant::now();
    let r = f.run(&["-d", "--name", "d1", img, "/bin/sh", "-c", script]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, "d1\n", "{}", r.stderr);
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert!(running(&f, "d1"));
    logs_show(&f, "d1", "ready\n");
    let r = f.rcfs(&["ps"]).expect_ok("ps");
    let line = r.stdout.lines().find(|l| l.starts_with("d1 ")).unwrap();
    assert!(line.contains(" Up "), "{line}");
    let r = f.rcfs(&["inspect", "d1"]).expect_ok("inspect");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["State"]["Running"], true, "{v}");

    // stdout and stderr apart, whole lines back together.
    let r = f.rcfs(&["logs", "d1"]).expect_ok("logs");
    assert_eq!(r.stdout, "out\nno newline\nready\n");
    assert_eq!(r.stderr, "err\n");
    let r = f
        .rcfs(&["logs", "--tail", "1", "d1"])
        .expect_ok("logs --tail");
    let log = f.store().join("containers/d1/ctr.log");
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    // The last line of the two streams (their order between them is the
    // pipes' to decide).
    let last = format!("{}{}", r.stdout, r.stderr);
    assert!(
        ["ready\n", "err\n"].contains(&last.as_str()) && text.ends_with(&format!(" F {last}")),
        "{last:?} of {text}"
    );
    let r = f.rcfs(&["logs", "-t", "d1"]).expect_ok("logs -t");
    let first = r.stdout.lines().next().unwrap();
    let (time, text) = first.split_once(' ').unwrap();
    assert_eq!(text, "out");
    assert!(
        time.starts_with("20") && time.contains('T') && time.ends_with("+00:00"),
        "{first}"
    );
    // The log is the user's alone.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A signal by name reaches pid 1's handler.
    f.rcfs(&["kill", "-s", "USR1", "d1"])
        .expect_ok("kill -s USR1");
    logs_show(&f, "d1", "usr1\n");

    // stop: SIGTERM first, which the command handles; wait: its code.
    let t0 = Instant::now();
    let r = f.rcfs(&["stop", "-t", "20", "d1"]).expect_ok("stop");
    assert_eq!(r.stdout, "d1\n");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(!running(&f, "d1"));
    let r = f.rcfs(&["wait", "d1"]).expect_ok("wait");
    assert_eq!(r.stdout, "3\n");
    // ps and inspect say so, podman's way.
    let r = f.rcfs(&["ps", "-a"]).expect_ok("ps -a");
    let line = r.stdout.lines().find(|l| l.starts_with("d1 ")).unwrap();
    assert!(
        line.contains(" ago ") && line.contains("Exited (3) "),
        "{line}"
    );
    let r = f.rcfs(&["inspect", "d1"]).expect_ok("inspect");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["State"]["Status"], "exited");
    assert_eq!(v[0]["State"]["ExitCode"], 3);
    assert_eq!(v[0]["Name"], "d1");
    assert!(v[0]["State"]["FinishedAt"].is_string(), "{v}");
    assert!(f.rcfs(&["logs", "d1"]).stdout.ends_with("bye\n"));
    // Stopping a stopped container is fine; killing one is not.
    f.rcfs(&["stop", "d1"]).expect_ok("stop again");
    let r = f.rcfs(&["kill", "d1"]);
    assert!(
        !r.success() && r.stderr.contains("not running"),
        "{}",
        r.stderr
    );

    // A pid 1 that ignores SIGTERM is killed after -t.
    f.run(&["-d", "--name", "d2", img, "/bin/busybox", "sleep", "1000"])
        .expect_ok("run -d sleep");
    let t0 = Instant::now();
    f.rcfs(&["stop", "-t", "1", "d2"]).expect_ok("stop d2");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert_eq!(f.rcfs(&["wait", "d2"]).expect_ok("wait d2").stdout, "137\n");

    // logs -f follows until the container ends.
    f.run(&[
        "-d",
        "--name",
        "d3",
        img,
        "/bin/sh",
        "-c",
        "for i in 1 2 3; do echo line $i; busybox sleep 0.3; done",
    ])
    .expect_ok("run -d d3");
    let r = f.rcfs(&["logs", "-f", "d3"]).expect_ok("logs -f");
    assert_eq!(r.stdout, "line 1\nline 2\nline 3\n");
    assert_eq!(f.rcfs(&["wait", "d3"]).expect_ok("wait d3").stdout, "0\n");
}

#[test]
fn a_detached_start_that_fails_says_why_and_leaves_nothing() {
    let f = Fixture::new(131, "gzip");
    let img = f.image.as_str();
    let r = f.run(&["-d", "--name", "bad", "-u", "nosuchuser", img, "/bin/sh"]);
    assert_eq!(code(&r), Some(125), "{}", r.stderr);
    assert!(r.stderr.contains("nosuchuser"), "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert!(!f.store().join("containers/bad").exists());
    let r = f.run(&["-d", "-t", img, "/bin/sh"]);
    assert_eq!(code(&r), Some(125), "{}", r.stderr);
    assert!(r.stderr.contains("not supported"), "{}", r.stderr);
    let r = f.run(&["--name", "fg", img, "/bin/sh", "-c", "true"]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    let r = f.rcfs(&["logs", "fg"]);
    assert!(
        !r.success() && r.stderr.contains("has no log"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_killed_monitor_takes_its_container_with_it() {
    let f = Fixture::new(132, "gzip");
    f.run(&[
        "-d",
        "--name",
        "m",
        &f.image,
        "/bin/busybox",
        "sleep",
        "1132",
    ])
    .expect_ok("run -d");
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.store().join("containers/m/container.json")).unwrap(),
    )
    .unwrap();
    let monitor = rec["pid"].as_i64().unwrap() as i32;
    let rootfs = f.store().join("containers/m/rootfs");
    // The container's sleep, seen from here: a child of the monitor's
    // child (the command is pid 1 of its namespace).
    let sleeps = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| c.starts_with(b"/bin/busybox\0sleep\x001132"))
            })
            .count()
    };
    // Started: the init has set up and execs it (its cmdline follows).
    let t0 = Instant::now();
    while sleeps() == 0 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sleeps(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t0 = Instant::now();
    while (sleeps() > 0 || running(&f, "m")) && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sleeps(), 0, "the container outlived its monitor");
    assert!(!running(&f, "m"));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&rootfs.display().to_string()), "{mounts}");
    // It can be removed, as any stopped container.
    f.rcfs(&["rm", "m"]).expect_ok("rm");
}

#[test]
fn an_unprivileged_user_runs_a_detached_container() {
    let f = Fixture::new(133, "gzip");
    let home = f.dir.path().join("home");
    let r = f.run_rootless(
        &home,
        &[
            "-d",
            "--name",
            "u",
            &f.image,
            "/bin/sh",
            "-c",
            "busybox id -u; trap 'exit 5' TERM; while :; do busybox sleep 0.1; done",
        ],
    );
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, "u\n");
    let t0 = Instant::now();
    loop {
        let r = f.rcfs_rootless(&home, &["logs", "u"]);
        if r.stdout == "0\n" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{} {}",
            r.stdout,
            r.stderr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    f.rcfs_rootless(&home, &["stop", "u"]).expect_ok("stop");
    let r = f.rcfs_rootless(&home, &["wait", "u"]).expect_ok("wait");
    assert_eq!(r.stdout, "5\n");
}

#[test]
fn exec_runs_a_command_in_a_running_container_as_its_own_would_run() {
    let f = Fixture::new(134, "gzip");
    let img = f.image.as_str();
    f.run(&[
        "-d",
        "--name",
        "x",
        "-e",
        "A=1",
        "--hostname",
        "box",
        "--pids-limit",
        "100",
        img,
        "/bin/sh",
        "-c",
        "echo started; while :; do busybox sleep 0.1; done",
    ])
    .expect_ok("run -d");
    logs_show(&f, "x", "started\n");
    let exec = |args: &[&str]| f.rcfs(&[&["exec"], args].concat());
    // The container's namespaces, cgroups, environment, filter and
    // capabilities; not pid 1.
    let probe = "echo pid=$$ A=$A; busybox hostname; \
                 test \"$(busybox cat /proc/1/cgroup)\" = \"$(busybox cat /proc/self/cgroup)\" && echo same-cgroup; \
                 busybox grep -E '^(Seccomp|CapEff):' /proc/self/status; \
                 busybox grep -E '^CapEff:' /proc/1/status; echo written > /from-exec; exit 7";
    let r = exec(&["x", "/bin/sh", "-c", probe]);
    assert_eq!(code(&r), Some(7), "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("pid=") && lines[0] != "pid=1 A=1" && lines[0].ends_with(" A=1"),
        "{}",
        r.stdout
    );
    assert_eq!(lines[1], "box");
    assert_eq!(lines[2], "same-cgroup", "{}", r.stdout);
    assert_eq!(lines[4], "Seccomp:\t2");
    assert_eq!(
        lines[3], lines[5],
        "the container's capabilities: {}",
        r.stdout
    );
    // What it wrote is the container's.
    let r = exec(&[
        "-u",
        "1000",
        "-e",
        "A=2",
        "-w",
        "/etc",
        "x",
        "/bin/sh",
        "-c",
        "busybox id -u; echo $A; busybox pwd; busybox cat /from-exec",
    ]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, "1000\n2\n/etc\nwritten\n");
    let r = exec(&["x", "no-such-command"]);
    assert_eq!(code(&r), Some(127), "{}", r.stderr);
    // stdin only with -i.
    let mut c = std::process::Command::new(crate::mounts::RCFS);
    c.args([
        "--root",
        f.store().to_str().unwrap(),
        "exec",
        "-i",
        "x",
        "/bin/busybox",
        "cat",
    ]);
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"typed\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "typed\n");
    // The command never holds exec's own stdin (here a file): /dev/null,
    // or with -i a pipe that exec fills.
    let given = f.dir.path().join("given-stdin");
    std::fs::write(&given, "secret\n").unwrap();
    for (flag, want) in [("-w", "/dev/null"), ("-i", "pipe:")] {
        let mut c = std::process::Command::new(crate::mounts::RCFS);
        c.args(["--root", f.store().to_str().unwrap(), "exec", flag])
            .args(if flag == "-w" { vec!["/"] } else { vec![] })
            .args(["x", "/bin/busybox", "readlink", "/proc/self/fd/0"]);
        c.stdin(std::fs::File::open(&given).unwrap());
        let out = c.output().unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        assert!(
            got.starts_with(want),
            "{flag}: {got:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    f.rcfs(&["stop", "-t", "1", "x"]).expect_ok("stop");
    let r = exec(&["x", "/bin/true"]);
    assert_eq!(code(&r), Some(125));
    assert!(r.stderr.contains("not running"), "{}", r.stderr);

    // A user's container, as that user.
    let home = f.dir.path().join("home");
    f.run_rootless(
        &home,
        &[
            "-d",
            "--name",
            "ux",
            img,
            "/bin/sh",
            "-c",
            "while :; do busybox sleep 0.1; done",
        ],
    )
    .expect_ok("rootless run -d");
    let r = f.rcfs_rootless(
        &home,
        &[
            "exec",
            "ux",
            "/bin/sh",
            "-c",
            "busybox id -u; busybox cat /proc/1/cmdline",
        ],
    );
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with("0\n/bin/sh"), "{}", r.stdout);
    f.rcfs_rootless(&home, &["stop", "-t", "1", "ux"])
        .expect_ok("stop ux");
}

/// How many lines `rcfs logs NAME` has.
fn log_lines(f: &Fixture, name: &str) -> usize {
    f.rcfs(&["logs", name]).stdout.lines().count()
}

/// Waits (60 s at most) until `rcfs logs NAME` has at least `n` lines.
fn logged_at_least(f: &Fixture, name: &str, n: usize) {
    let t0 = Instant::now();
    while log_lines(f, name) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{name}: {} lines logged, not {n}",
            log_lines(f, name)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_monitor_restarts_as_the_policy_says_and_never_after_stop() {
    let f = Fixture::new(132, "gzip");
    let img = f.image.as_str();
    // on-failure:2: the first run and two more, then it stays exited.
    f.run(&[
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        img,
        "/bin/sh",
        "-c",
        "echo run; exit 3",
    ])
    .expect_ok("run -d flaky");
    logged_at_least(&f, "flaky", 3);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(log_lines(&f, "flaky"), 3);
    assert!(!running(&f, "flaky"));
    assert_eq!(f.rcfs(&["wait", "flaky"]).stdout, "3\n");
    // on-failure after a zero exit: once.
    f.run(&[
        "-d",
        "--name",
        "fine2",
        "--restart",
        "on-failure",
        img,
        "/bin/sh",
        "-c",
        "echo once",
    ])
    .expect_ok("run -d fine2");
    logged_at_least(&f, "fine2", 1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(log_lines(&f, "fine2"), 1);

    // always: again and again, until rcfs stop; rcfs restart starts it
    // again, with its policy.
    let tick = ["/bin/sh", "-c", "echo tick; busybox sleep 0.2"];
    f.run(
        &[
            &["-d", "--name", "ticker", "--restart", "always", img][..],
            &tick[..],
        ]
        .concat(),
    )
    .expect_ok("run -d ticker");
    logged_at_least(&f, "ticker", 3);
    f.rcfs(&["stop", "-t", "1", "ticker"]).expect_ok("stop");
    let n = log_lines(&f, "ticker");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(log_lines(&f, "ticker"), n, "started again after rcfs stop");
    f.rcfs(&["restart", "ticker"]).expect_ok("restart");
    logged_at_least(&f, "ticker", n + 2);
    f.rcfs(&["kill", "ticker"]).expect_ok("kill");
    std::thread::sleep(Duration::from_secs(1));
    let n = log_lines(&f, "ticker");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(log_lines(&f, "ticker"), n, "started again after rcfs kill");

    // Policies that cannot hold: refused before anything runs.
    for bad in [
        &["-d", "--restart", "sometimes"][..],
        &["-d", "--rm", "--restart", "always"],
        &["--restart", "always"],
    ] {
        let r = f.run(&[bad, &[img, "true"]].concat());
        assert_eq!(code(&r), Some(125), "{bad:?}: {}", r.stderr);
        assert!(r.stderr.contains("--restart"), "{bad:?}: {}", r.stderr);
    }
}
