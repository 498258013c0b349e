//! `rcfs run` checked against podman, not against our own expectations:
//! the same commands (ids, env, cwd, capabilities, limits, signals, exit
//! codes, mounts, file ownership of volumes, keep-id, hostname, hosts,
//! ports, detach/exec/logs/stop) run by rootless `podman run` (Debian's
//! podman, runc, a store of its own in a temp dir) and by rootless `rcfs
//! run`, as the same `useradd` user, on the same image; their outputs and
//! exit codes must be equal. The differences rcfs keeps on purpose are in
//! [`DIFFERENT`], each with why (and in the README).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::containers::{code, Fixture};
use crate::mounts::{run, Run, RCFS};

const T: Duration = Duration::from_secs(180);

/// Cases whose outputs differ on purpose: (case, why).
const DIFFERENT: [(&str, &str); 3] = [
    (
        "no-new-privs",
        "rcfs sets no_new_privs for every container (podman only with \
         --security-opt no-new-privileges): a setuid program in an image cannot \
         gain what the user did not give",
    ),
    (
        "workdir",
        "rcfs makes a -w dir the image lacks, as docker does (and podman for the \
         image's WorkingDir); podman 4.3 refuses to start",
    ),
    (
        "mount-points",
        "podman adds /run/.containerenv and binds /etc/hostname, /etc/hosts and \
         /etc/resolv.conf read-write; rcfs binds its own read-only and has no \
         .containerenv",
    ),
];

/// One case: a name, the options before the image, the command.
struct Case {
    name: &'static str,
    opts: Vec<String>,
    cmd: Vec<String>,
}

fn case(name: &'static str, opts: &[&str], script: &str) -> Case {
    Case {
        name,
        opts: opts.iter().map(|s| s.to_string()).collect(),
        cmd: ["/bin/sh", "-c", script].map(str::to_owned).to_vec(),
    }
}

/// The user both run as, with subordinate ids (useradd gives them).
pub(crate) struct User {
    pub name: String,
    uid: u32,
    gid: u32,
    pub home: PathBuf,
    run_dir: PathBuf,
}

impl User {
    pub fn new(name: &str, dir: &Path) -> User {
        if !Command::new("id")
            .arg(name)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            let r = run(Command::new("useradd").args(["-m", name]), T);
            assert!(r.success(), "useradd: {}", r.stderr);
        }
        let id = |flag: &str| -> u32 {
            let o = Command::new("id").args([flag, name]).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        let home = dir.join("home");
        let run_dir = dir.join("xdg");
        for d in [&home, &run_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::set_permissions(
            &run_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let _ = Command::new("chmod")
            .args(["666", "/dev/fuse", "/dev/net/tun"])
            .status();
        let _ = Command::new("chown")
            .args(["-R", &format!("{name}:"), dir.to_str().unwrap()])
            .status();
        User {
            name: name.to_owned(),
            uid: id("-u"),
            gid: id("-g"),
            home,
            run_dir,
        }
    }

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={}", self.name),
            &format!("--regid={}", self.name),
            "--init-groups",
            program,
        ]);
        c.env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.run_dir)
            .env_remove("XDG_DATA_HOME")
            .current_dir(&self.home);
        c
    }

    /// podman with a store of its own in the test's dir.
    fn podman(&self, args: &[&str]) -> Run {
        let mut c = self.cmd("podman");
        let root = self.home.join("podman-root");
        let runroot = self.run_dir.join("podman-run");
        c.args(["--root", root.to_str().unwrap()])
            .args(["--runroot", runroot.to_str().unwrap()])
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file", "--runtime", "runc"])
            .args(args);
        run(&mut c, T)
    }

    fn rcfs(&self, args: &[&str]) -> Run {
        let mut c = self.cmd(RCFS);
        c.args(args);
        run(&mut c, T)
    }
}

impl Drop for User {
    /// podman's pause process and rcfs's keeper go with the test.
    fn drop(&mut self) {
        for p in ["libpod/tmp/pause.pid", "rcfs/userns.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.run_dir.join(p)) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// Output and exit code of a run, podman's warnings about the host's
/// mount propagation left out.
fn outcome(r: &Run) -> (String, Option<i32>) {
    (r.stdout.clone(), code(r))
}

#[test]
fn rcfs_run_does_what_podman_run_does() {
    let f = Fixture::new(170, "gzip");
    let img = f.image.clone();
    let u = User::new("rcfs-e2e-pm", f.dir.path());
    let r = u.podman(&["pull", "-q", "--tls-verify=false", &img]);
    assert!(r.success(), "podman pull: {}", r.stderr);
    u.rcfs(&["pull", "-q", "--tls-verify=false", &img])
        .expect_ok("rcfs pull");
    let vol = |who: &str| {
        let d = f.dir.path().join(format!("vol-{who}"));
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(u.uid), Some(u.gid)).unwrap();
        d
    };
    let caps = "busybox grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status";
    let limits = "ulimit -Sn; ulimit -Hn; ulimit -Su; ulimit -Hu";
    let mut cases = vec![
        case("ids", &[], "busybox id; busybox id -G"),
        case("uid", &["-u", "1000"], "busybox id; busybox id -G"),
        case("uid-gid", &["-u", "1000:1000"], "busybox id"),
        case("group-add", &["-u", "1000:1000", "--group-add", "44"], "busybox id -G"),
        case("cwd", &[], "pwd"),
        case("workdir", &["-w", "/work/here"], "pwd; busybox ls -ld . | busybox cut -c1-10"),
        case(
            "env",
            &[],
            "busybox env | busybox grep -v -e ^HOSTNAME= -e ^container= | busybox sort",
        ),
        case("env-e", &["-e", "A=1", "-e", "PATH=/x:/bin"], "echo $A $PATH"),
        case("pid1", &[], "echo $$; busybox cat /proc/1/cmdline | busybox tr '\\0' ' '"),
        case("caps-root", &[], caps),
        case("caps-user", &["-u", "1000"], caps),
        case("cap-drop", &["--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE"], caps),
        case("cap-add", &["--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN"], caps),
        case("seccomp", &[], "busybox grep -E '^Seccomp:' /proc/self/status"),
        case("no-new-privs", &[], "busybox grep -E '^NoNewPrivs:' /proc/self/status"),
        case("limits", &[], limits),
        case("ulimit", &["--ulimit", "nofile=100:200"], limits),
        case("hostname", &["--hostname", "box"], "busybox hostname; busybox cat /etc/hostname"),
        case("exit-code", &[], "exit 3"),
        case("pid1-term", &[], "kill -TERM $$; echo lives"),
        case("init-term", &["--init"], "kill -TERM $$; echo lives"),
        case("trap", &[], "trap 'exit 42' TERM; kill -TERM $$; busybox sleep 5"),
        case(
            "read-only",
            &["--read-only"],
            "busybox touch /x 2>/dev/null || echo ro; busybox touch /tmp/x && echo tmp; \
             busybox touch /run/x && echo run; busybox touch /var/tmp/x && echo var-tmp",
        ),
        case(
            "tmpfs",
            &["--tmpfs", "/scratch"],
            "busybox grep ' /scratch ' /proc/self/mountinfo | busybox cut -d' ' -f6",
        ),
        case(
            "tmpfs-exec",
            &["--tmpfs", "/scratch:exec,size=1m"],
            "busybox grep ' /scratch ' /proc/self/mountinfo | busybox cut -d' ' -f6; \
             busybox df -k /scratch | busybox awk 'NR>1 {print $2}'",
        ),
        case("dev", &[], "busybox ls /dev | busybox sort"),
        case("shm", &[], "busybox df -k /dev/shm | busybox awk 'NR>1 {print $2}'"),
        case("shm-size", &["--shm-size", "2m"], "busybox df -k /dev/shm | busybox awk 'NR>1 {print $2}'"),
        case(
            "proc-sys-ro",
            &[],
            "echo 1 > /proc/sys/kernel/core_pattern 2>/dev/null || echo denied",
        ),
        case("umask", &[], "umask"),
        case("stdin", &[], "busybox cat; echo $?"),
        case("no-tty", &[], "busybox tty; echo $?"),
        case(
            "hosts",
            &["--add-host", "db.example:10.1.2.3"],
            "busybox grep -c host.containers.internal /etc/hosts; \
             busybox awk '$2 == \"db.example\" {print $1}' /etc/hosts; \
             busybox grep -c -w localhost /etc/hosts",
        ),
        case("dns", &["--dns", "192.0.2.53"], "busybox grep nameserver /etc/resolv.conf"),
        case("net-none", &["--net", "none"], "busybox ls /sys/class/net"),
        case("keep-id", &["--userns=keep-id"], "busybox id -u; busybox id -g"),
        case(
            "mount-points",
            &[],
            "busybox cut -d' ' -f5 /proc/self/mountinfo | busybox grep -E '^/(etc|run)' | busybox sort",
        ),
        Case {
            name: "entrypoint",
            opts: vec!["--entrypoint".into(), "/bin/busybox".into()],
            cmd: vec!["echo".into(), "via".into(), "entrypoint".into()],
        },
        Case {
            name: "not-found",
            opts: vec![],
            cmd: vec!["/no/such/command".into()],
        },
        Case {
            name: "not-executable",
            opts: vec![],
            cmd: vec!["/usr/share/data/f001".into()],
        },
    ];
    // Files a container writes into a bound host dir: whose they are on
    // the host (root's, a subordinate uid's; the user's own under keep-id).
    for (name, opts) in [
        ("volume-owners", vec![]),
        ("volume-owners-keep-id", vec!["--userns=keep-id"]),
    ] {
        let script =
            "busybox touch /v/a; busybox mkdir /v/d; busybox chown 1000:1000 /v/d 2>/dev/null; \
                      busybox stat -c '%u:%g %n' /v/a /v/d";
        cases.push(case(name, &opts, script));
    }

    let mut differ = Vec::new();
    for c in &cases {
        let mut got = Vec::new();
        for who in ["podman", "rcfs"] {
            let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
            if who == "rcfs" {
                args.push("--tls-verify=false".into());
            }
            if c.name.starts_with("volume-owners") {
                args.push("-v".into());
                args.push(format!(
                    "{}:/v",
                    vol(&format!("{who}-{}", c.name)).display()
                ));
            }
            args.extend(c.opts.iter().cloned());
            args.push(img.clone());
            args.extend(c.cmd.iter().cloned());
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = if who == "podman" {
                u.podman(&a)
            } else {
                u.rcfs(&a)
            };
            got.push((outcome(&r), r.stderr));
        }
        let (p, r) = (&got[0], &got[1]);
        // On the host: the files' owners, as the host sees them.
        let host = |who: &str| -> String {
            let d = f.dir.path().join(format!("vol-{who}-{}", c.name));
            ["a", "d"]
                .iter()
                .map(|n| {
                    let m = std::fs::metadata(d.join(n));
                    m.map_or("-".into(), |m| {
                        use std::os::unix::fs::MetadataExt;
                        format!("{}:{}", m.uid(), m.gid())
                    })
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let on_host = c
            .name
            .starts_with("volume-owners")
            .then(|| (host("podman"), host("rcfs")));
        let same = p.0 == r.0 && on_host.as_ref().is_none_or(|(a, b)| a == b);
        let known = DIFFERENT.iter().find(|(n, _)| *n == c.name);
        match (same, known) {
            (true, None) => {}
            (true, Some(_)) => differ.push(format!(
                "{}: listed as different, but the same now: take it off the list",
                c.name
            )),
            (false, Some((_, why))) => eprintln!("{}: differs on purpose ({why})", c.name),
            (false, None) => differ.push(format!(
                "{}:\n  podman {:?} (stderr {:?})\n  rcfs   {:?} (stderr {:?})\n  on the host {:?}",
                c.name, p.0, p.1, r.0, r.1, on_host
            )),
        }
    }

    // Detached: logs, exec, stop and wait, as podman has them.
    let mut seq = Vec::new();
    for who in ["podman", "rcfs"] {
        let t = |a: &[&str]| -> (String, Option<i32>) {
            let r = if who == "podman" {
                u.podman(a)
            } else {
                u.rcfs(a)
            };
            outcome(&r)
        };
        let mut runargs = vec!["run", "-d", "--name", "bg"];
        if who == "rcfs" {
            runargs.push("--tls-verify=false");
        }
        runargs.extend([
            img.as_str(),
            "/bin/sh",
            "-c",
            "echo out; echo err >&2; exec busybox sleep 1000",
        ]);
        let r = if who == "podman" {
            u.podman(&runargs)
        } else {
            u.rcfs(&runargs)
        };
        if !r.success() {
            differ.push(format!("{who} run -d: {}", r.stderr));
        }
        std::thread::sleep(Duration::from_millis(500));
        let mut steps = Vec::new();
        let logs = if who == "podman" {
            u.podman(&["logs", "bg"])
        } else {
            u.rcfs(&["logs", "bg"])
        };
        steps.push((
            "logs",
            (format!("{}|{}", logs.stdout, logs.stderr), code(&logs)),
        ));
        steps.push((
            "exec",
            t(&[
                "exec",
                "bg",
                "/bin/sh",
                "-c",
                "busybox id -u; pwd; busybox cat /proc/1/cmdline | busybox tr '\\0' ' '",
            ]),
        ));
        steps.push((
            "exec-user",
            t(&[
                "exec",
                "-u",
                "1000",
                "-w",
                "/usr",
                "bg",
                "/bin/sh",
                "-c",
                "busybox id -u; pwd",
            ]),
        ));
        steps.push((
            "exec-env",
            t(&["exec", "-e", "X=y", "bg", "/bin/sh", "-c", "echo $X"]),
        ));
        steps.push(("exec-exit", t(&["exec", "bg", "/bin/sh", "-c", "exit 5"])));
        let stop = if who == "podman" {
            u.podman(&["stop", "-t", "1", "bg"])
        } else {
            u.rcfs(&["stop", "-t", "1", "bg"])
        };
        steps.push(("stop", (stop.stdout.clone(), code(&stop))));
        steps.push(("wait", t(&["wait", "bg"])));
        steps.push(("rm", t(&["rm", "bg"])));
        seq.push(steps);
    }
    for (p, r) in seq[0].iter().zip(&seq[1]) {
        if p.1 != r.1 {
            differ.push(format!(
                "detached {}: podman {:?}, rcfs {:?}",
                p.0, p.1, r.1
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "rcfs differs from podman in {} of {} cases:\n{}",
        differ.len(),
        cases.len() + seq[0].len(),
        differ.join("\n")
    );
}
