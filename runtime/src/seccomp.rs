//! The command's seccomp filter, podman's way: a profile in
//! containers/common's JSON format (what podman reads from
//! `/usr/share/containers/seccomp.json`), compiled by libseccomp and loaded
//! by the command's process right before it execs.
//!
//! The format: `defaultAction` (and `defaultErrnoRet`), the architectures
//! (`architectures`, or `archMap` whose entry for the native architecture
//! names the sub-architectures to add), and `syscalls`, each a rule for
//! `names` with an `action` (`errnoRet` for `SCMP_ACT_ERRNO`), `args`
//! comparisons and `includes`/`excludes` conditions on capabilities,
//! architectures and the kernel (`minKernel`). Fields we do not know (a
//! `comment`) are ignored.
//!
//! Semantics, as containers/common and runc give them:
//! * a rule is left out when its `excludes.arches` names the native
//!   architecture or any of its `excludes.caps` is in the command's
//!   bounding set; or when `includes.arches` does not name the native
//!   architecture, one of its `includes.caps` is not in the bounding set,
//!   or the kernel is older than `includes.minKernel`;
//! * names libseccomp does not know (syscalls newer than the library) are
//!   skipped;
//! * `args` comparisons are ANDed, unless one argument index appears more
//!   than once: then each comparison is a rule of its own (ORed), which is
//!   how a profile says "one of these values";
//! * `SCMP_ACT_ERRNO` without `errnoRet` is EPERM; a rule whose action is
//!   the default action is left out (libseccomp refuses it);
//! * `SCMP_CMP_MASKED_EQ` takes `value` as the mask and `valueTwo` as what
//!   the masked argument must equal.
//!
//! Compiling a profile is slow (libseccomp takes some 15 ms to generate the
//! BPF of podman's 470 syscalls for x86_64, x86 and x32), so `rcfs run`
//! compiles it ([`program`]) and keeps the program in its store, keyed by
//! everything it depends on ([`ProfileText::cache_key`]); the init gets the
//! program in its spec and the command's process loads it ([`load`]).
//!
//! Which profile (see [`choose`]): a file given by `--security-opt
//! seccomp=FILE`, none with `seccomp=unconfined`, else podman's
//! [`HOST_OVERRIDE`] or [`HOST_DEFAULT`] when the host has one, else
//! rcfs's own [`BUILTIN`]
//! (see `seccomp_default.json` for what it blocks and why it is a deny
//! list).

use std::io;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use serde::{Deserialize, Serialize};

/// Where containers-common puts podman's default profile.
pub const HOST_DEFAULT: &str = "/usr/share/containers/seccomp.json";

/// The administrator's profile, which podman takes over [`HOST_DEFAULT`]
/// when it exists (containers/common's `SeccompOverridePath`).
pub const HOST_OVERRIDE: &str = "/etc/containers/seccomp.json";

/// rcfs's own default, for hosts without [`HOST_DEFAULT`].
pub const BUILTIN: &str = include_str!("seccomp_default.json");

/// The largest profile file read (podman's is 16 KiB; a profile naming
/// every syscall of every architecture with arguments stays far below).
pub const MAX_PROFILE_BYTES: u64 = 4 << 20;

/// The longest program the kernel takes (BPF_MAXINSNS), in bytes.
const MAX_PROGRAM_BYTES: usize = 4096 * std::mem::size_of::<libc::sock_filter>();

/// The command's filter as a BPF program (what libseccomp exports:
/// `struct sock_filter`s, native byte order), for a command with rcfs's
/// capabilities ([`crate::init::KEPT_CAPS`]) on this machine.
pub fn program(profile: &Profile) -> io::Result<Vec<u8>> {
    let mut ctx = profile.compile(&command_caps())?;
    // A binary tree of syscall numbers rather than a list: every syscall of
    // the command runs the filter, and podman's lists ~470 of them.
    ctx.set_ctl_optimize(2)
        .map_err(|e| io::Error::other(format!("seccomp: libseccomp's optimize level: {e}")))?;
    // SAFETY: memfd_create with a NUL-terminated name; a new fd is ours.
    let fd = unsafe { libc::memfd_create(c"rcfs-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the new fd, ours alone.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    ctx.export_bpf(&f)
        .map_err(|e| io::Error::other(format!("seccomp profile: exporting its BPF: {e}")))?;
    let mut out = Vec::new();
    io::Seek::seek(&mut f, io::SeekFrom::Start(0))?;
    io::Read::read_to_end(
        &mut io::Read::take(f, MAX_PROGRAM_BYTES as u64 + 1),
        &mut out,
    )?;
    check_program(&out)?;
    Ok(out)
}

/// The bounding set of the container's command, by name.
fn command_caps() -> Vec<String> {
    crate::init::KEPT_CAPS
        .iter()
        .map(|c| c.to_string())
        .collect()
}

/// Whether `p` can be a BPF program: whole instructions, at least one, no
/// more than the kernel takes (the kernel checks the rest).
pub fn check_program(p: &[u8]) -> io::Result<()> {
    let n = std::mem::size_of::<libc::sock_filter>();
    if p.is_empty() || p.len() % n != 0 || p.len() > MAX_PROGRAM_BYTES {
        return Err(io::Error::other(format!(
            "seccomp: a program of {} bytes is not a BPF program of 1 to 4096 instructions",
            p.len()
        )));
    }
    Ok(())
}

/// Loads the BPF `program` as this thread's seccomp filter (no_new_privs
/// must be set: then no privilege is needed). The kernel checks it.
pub(crate) fn load(program: &[u8]) -> io::Result<()> {
    check_program(program)?;
    let mut insns: Vec<libc::sock_filter> = program
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: insns.len() as u16,
        filter: insns.as_mut_ptr(),
    };
    // SAFETY: seccomp(2) reads `prog` and the instructions it points to,
    // both alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A field that Go's encoder may have written as `null`: its default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A profile, as containers/common's JSON has it (only what we use).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    #[serde(default, deserialize_with = "nullable")]
    pub default_action: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_errno_ret: Option<u32>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub architectures: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub arch_map: Vec<ArchMap>,
    #[serde(default, deserialize_with = "nullable")]
    pub syscalls: Vec<Rule>,
}

/// An `archMap` entry: the sub-architectures of an architecture.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: String,
    #[serde(default, deserialize_with = "nullable")]
    pub sub_architectures: Vec<String>,
}

/// A `syscalls` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names: Vec<String>,
    /// The old single-name form.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    pub action: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub errno_ret: Option<u32>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<Arg>,
    #[serde(default, deserialize_with = "nullable")]
    pub includes: Filter,
    #[serde(default, deserialize_with = "nullable")]
    pub excludes: Filter,
}

/// A comparison of one syscall argument.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u32,
    #[serde(default, deserialize_with = "nullable")]
    pub value: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub value_two: u64,
    pub op: String,
}

/// `includes` / `excludes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub caps: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub arches: Vec<String>,
    /// `MAJOR.MINOR` (includes only).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub min_kernel: String,
}

/// A profile as text, and where it comes from; parsed only when its
/// program is not kept already ([`ProfileText::cache_key`]).
#[derive(Debug, Clone)]
pub struct ProfileText {
    /// A path, or rcfs's built-in profile.
    pub path: Option<String>,
    pub text: std::borrow::Cow<'static, str>,
}

/// The profile `--security-opt seccomp=VALUE` asks for (`None`: the
/// option was not given): `unconfined` is none; a path is that file;
/// without the option, as podman: [`HOST_OVERRIDE`] when it exists, else
/// [`HOST_DEFAULT`] when it exists; else rcfs's [`BUILTIN`].
/// Errors say which profile and what is wrong with it.
pub fn choose(opt: Option<&str>) -> Result<Option<ProfileText>, String> {
    match opt {
        Some("unconfined") => Ok(None),
        Some(path) => read(path).map(Some),
        None => {
            for path in [HOST_OVERRIDE, HOST_DEFAULT] {
                match std::fs::metadata(path) {
                    Ok(_) => return read(path).map(Some),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(format!("the seccomp profile {path}: {e}")),
                }
            }
            Ok(Some(ProfileText {
                path: None,
                text: BUILTIN.into(),
            }))
        }
    }
}

/// Says what is wrong with the profile at `path` (`None`: the built-in).
fn about(path: Option<&str>, e: &dyn std::fmt::Display) -> String {
    match path {
        Some(path) => {
            format!("the seccomp profile {path}: {e} (--security-opt seccomp=FILE|unconfined)")
        }
        None => format!("rcfs's built-in seccomp profile: {e}"),
    }
}

/// Reads the profile file at `path` (at most [`MAX_PROFILE_BYTES`]).
fn read(path: &str) -> Result<ProfileText, String> {
    let what = |e: &dyn std::fmt::Display| about(Some(path), e);
    let f = std::fs::File::open(path).map_err(|e| what(&e))?;
    let mut text = String::new();
    io::Read::read_to_string(&mut io::Read::take(f, MAX_PROFILE_BYTES + 1), &mut text)
        .map_err(|e| what(&e))?;
    if text.len() as u64 > MAX_PROFILE_BYTES {
        return Err(what(&format!("larger than {MAX_PROFILE_BYTES} bytes")));
    }
    Ok(ProfileText {
        path: Some(path.to_owned()),
        text: text.into(),
    })
}

impl ProfileText {
    /// The profile, parsed and checked ([`parse`]).
    pub fn parse(&self) -> Result<Profile, String> {
        parse(&self.text).map_err(|e| about(self.path.as_deref(), &e))
    }

    /// Everything the program of this profile depends on, as text: the
    /// profile's text, the command's capabilities, the architecture, the
    /// kernel release (`minKernel`) and libseccomp's version. Two equal
    /// keys give the same [`program`]; a start whose program is kept
    /// reads the profile and parses nothing.
    pub fn cache_key(&self) -> String {
        let lib = libseccomp::ScmpVersion::current()
            .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
            .unwrap_or_default();
        format!(
            "rcfs-seccomp-3\n{}\n{}\n{}\n{}\n{lib}\n",
            self.text,
            command_caps().join(","),
            std::env::consts::ARCH,
            kernel_release().unwrap_or_default(),
        )
    }
}

/// Parses a profile and checks every action, operator, architecture and
/// kernel version in it (whether a rule applies is decided at
/// [`Profile::compile`]).
pub fn parse(text: &str) -> Result<Profile, String> {
    let p: Profile = serde_json::from_str(text).map_err(|e| format!("not a profile: {e}"))?;
    if p.default_action.is_empty() {
        return Err("no defaultAction".into());
    }
    action(&p.default_action, p.default_errno_ret)?;
    if !p.architectures.is_empty() && !p.arch_map.is_empty() {
        return Err("both 'architectures' and 'archMap': use one".into());
    }
    for a in p
        .architectures
        .iter()
        .chain(p.arch_map.iter().map(|m| &m.architecture))
        .chain(p.arch_map.iter().flat_map(|m| &m.sub_architectures))
    {
        arch(a)?;
    }
    for (i, r) in p.syscalls.iter().enumerate() {
        let at = |e: String| format!("syscalls[{i}]: {e}");
        if !r.name.is_empty() && !r.names.is_empty() {
            return Err(at("both 'name' and 'names': use one".into()));
        }
        action(&r.action, r.errno_ret).map_err(at)?;
        for a in &r.args {
            compare(a).map_err(at)?;
        }
        if !r.includes.min_kernel.is_empty() {
            kernel_version(&r.includes.min_kernel)
                .ok_or_else(|| at(format!("bad minKernel {:?}", r.includes.min_kernel)))?;
        }
    }
    Ok(p)
}

impl Profile {
    /// The filter for a command whose bounding set is `caps` (names as
    /// `CAP_SYS_ADMIN`), on this machine: not loaded yet
    /// ([`ScmpFilterContext::load`], with no_new_privs set).
    pub fn compile(&self, caps: &[String]) -> io::Result<ScmpFilterContext> {
        let e = |what: &str, e: &dyn std::fmt::Display| {
            io::Error::other(format!("seccomp profile: {what}: {e}"))
        };
        let bad = |s: String| io::Error::other(format!("seccomp profile: {s}"));
        let default = action(&self.default_action, self.default_errno_ret).map_err(bad)?;
        let mut ctx = ScmpFilterContext::new(default).map_err(|x| e("making a filter", &x))?;
        let native = ScmpArch::native();
        let mut arches = Vec::new();
        for a in &self.architectures {
            arches.push(arch(a).map_err(bad)?);
        }
        if let Some(m) = self
            .arch_map
            .iter()
            .find(|m| arch(&m.architecture).ok() == Some(native))
        {
            for a in &m.sub_architectures {
                arches.push(arch(a).map_err(bad)?);
            }
        }
        for a in arches {
            if a != native && a != ScmpArch::Native {
                ctx.add_arch(a)
                    .map_err(|x| e(&format!("adding the architecture {a:?}"), &x))?;
            }
        }
        let native_name = go_arch();
        let kernel = running_kernel();
        for (i, r) in self.syscalls.iter().enumerate() {
            if !applies(r, caps, native_name, kernel) {
                continue;
            }
            let act = action(&r.action, r.errno_ret).map_err(bad)?;
            if act == default {
                continue;
            }
            let cmps = r
                .args
                .iter()
                .map(compare)
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            let mut seen = [0u8; 6];
            for a in &r.args {
                seen[a.index as usize] += 1;
            }
            // One index twice: each comparison a rule of its own (OR).
            let groups: Vec<Vec<ScmpArgCompare>> = if seen.iter().any(|n| *n > 1) {
                cmps.into_iter().map(|c| vec![c]).collect()
            } else {
                vec![cmps]
            };
            let names = if r.name.is_empty() {
                &r.names[..]
            } else {
                std::slice::from_ref(&r.name)
            };
            for name in names {
                // A name libseccomp does not know: newer than the library,
                // skipped (as podman does).
                let Ok(sys) = libseccomp::ScmpSyscall::from_name(name) else {
                    continue;
                };
                for g in &groups {
                    ctx.add_rule_conditional(act, sys, g)
                        .map_err(|x| e(&format!("syscalls[{i}] ({name}, {})", r.action), &x))?;
                }
            }
        }
        Ok(ctx)
    }
}

/// Whether rule `r` is in the filter of a command with bounding set
/// `caps` on architecture `arch` (podman's name) and kernel `kernel`.
fn applies(r: &Rule, caps: &[String], arch: &str, kernel: Option<(u32, u32)>) -> bool {
    let has = |c: &String| caps.contains(c);
    if r.excludes.arches.iter().any(|a| a == arch) || r.excludes.caps.iter().any(has) {
        return false;
    }
    if !r.includes.arches.is_empty() && !r.includes.arches.iter().any(|a| a == arch) {
        return false;
    }
    if !r.includes.caps.iter().all(has) {
        return false;
    }
    if let (Some(min), Some(k)) = (kernel_version(&r.includes.min_kernel), kernel) {
        if k < min {
            return false;
        }
    }
    true
}

/// An action by its name; ERRNO's (and TRACE's) number from `errno`.
fn action(name: &str, errno: Option<u32>) -> Result<ScmpAction, String> {
    let num = |default: u32| -> Result<u32, String> {
        let n = errno.unwrap_or(default);
        if n > 4095 {
            return Err(format!("errnoRet {n} of {name} is not an errno"));
        }
        Ok(n)
    };
    Ok(match name {
        "SCMP_ACT_ALLOW" => ScmpAction::Allow,
        "SCMP_ACT_ERRNO" => ScmpAction::Errno(num(libc::EPERM as u32)? as i32),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => ScmpAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpAction::KillProcess,
        "SCMP_ACT_TRAP" => ScmpAction::Trap,
        "SCMP_ACT_LOG" => ScmpAction::Log,
        "SCMP_ACT_TRACE" => ScmpAction::Trace(num(libc::EPERM as u32)? as u16),
        _ => {
            return Err(format!(
                "unknown action {name:?} (known: SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, \
                 SCMP_ACT_KILL, SCMP_ACT_KILL_THREAD, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, \
                 SCMP_ACT_LOG, SCMP_ACT_TRACE)"
            ))
        }
    })
}

/// An argument comparison.
fn compare(a: &Arg) -> Result<ScmpArgCompare, String> {
    if a.index > 5 {
        return Err(format!("argument index {} (a syscall has 0 to 5)", a.index));
    }
    let op = match a.op.as_str() {
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_MASKED_EQ" => {
            return Ok(ScmpArgCompare::new(
                a.index,
                ScmpCompareOp::MaskedEqual(a.value),
                a.value_two,
            ))
        }
        op => return Err(format!("unknown operator {op:?}")),
    };
    Ok(ScmpArgCompare::new(a.index, op, a.value))
}

/// An architecture by its `SCMP_ARCH_*` name.
fn arch(name: &str) -> Result<ScmpArch, String> {
    name.parse::<ScmpArch>()
        .map_err(|_| format!("unknown architecture {name:?}"))
}

/// The native architecture by the name podman's profiles use in
/// `includes`/`excludes` (Go's).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        "loongarch64" => "loong64",
        a => a,
    }
}

/// `MAJOR.MINOR[...]` as numbers.
fn kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(['.', '-', '+']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next().unwrap_or("0").parse().ok()?;
    Some((major, minor))
}

/// The running kernel's version.
fn running_kernel() -> Option<(u32, u32)> {
    kernel_version(&kernel_release()?)
}

/// The running kernel's release (`uname -r`).
fn kernel_release() -> Option<String> {
    // SAFETY: uname fills the struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: the kernel NUL-terminates `release`.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    release.to_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_profile_parses_and_compiles() {
        let p = parse(BUILTIN).unwrap();
        assert_eq!(p.default_action, "SCMP_ACT_ALLOW");
        let caps: Vec<String> = ["CAP_CHOWN", "CAP_KILL"].map(String::from).to_vec();
        p.compile(&caps).unwrap();
        let admin: Vec<String> = ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]
            .map(String::from)
            .to_vec();
        p.compile(&admin).unwrap();
        let bpf = program(&p).unwrap();
        check_program(&bpf).unwrap();
        assert!(check_program(&bpf[1..]).is_err());
        let text = |t: &str| ProfileText {
            path: None,
            text: t.to_owned().into(),
        };
        assert_ne!(
            text(BUILTIN).cache_key(),
            text(&BUILTIN.replace("CAP_SYS_BOOT", "CAP_SYS_NICE")).cache_key()
        );
    }

    #[test]
    fn bad_profiles_are_refused_with_what_is_wrong() {
        for (text, says) in [
            ("{", "not a profile"),
            ("{\"syscalls\": []}", "no defaultAction"),
            ("{\"defaultAction\": \"SCMP_ACT_NOPE\"}", "unknown action"),
            (
                "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"mkdir\"], \
                 \"action\": \"SCMP_ACT_ERRNO\", \"args\": [{\"index\": 7, \"op\": \"SCMP_CMP_EQ\"}]}]}",
                "argument index 7",
            ),
            (
                "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"mkdir\"], \
                 \"action\": \"SCMP_ACT_ERRNO\", \"args\": [{\"index\": 0, \"op\": \"SCMP_CMP_ABOUT\"}]}]}",
                "unknown operator",
            ),
            (
                "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": 70000}",
                "not an errno",
            ),
            (
                "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"architectures\": [\"SCMP_ARCH_VAX\"]}",
                "unknown architecture",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn includes_and_excludes() {
        let rule = |inc: Filter, exc: Filter| Rule {
            names: vec!["mount".into()],
            action: "SCMP_ACT_ALLOW".into(),
            includes: inc,
            excludes: exc,
            ..Default::default()
        };
        let caps = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let admin = Filter {
            caps: caps(&["CAP_SYS_ADMIN"]),
            ..Default::default()
        };
        let none = Filter::default();
        let k = Some((6, 1));
        assert!(!applies(
            &rule(admin.clone(), none.clone()),
            &caps(&["CAP_KILL"]),
            "amd64",
            k
        ));
        assert!(applies(
            &rule(admin.clone(), none.clone()),
            &caps(&["CAP_SYS_ADMIN"]),
            "amd64",
            k
        ));
        assert!(applies(
            &rule(none.clone(), admin.clone()),
            &caps(&["CAP_KILL"]),
            "amd64",
            k
        ));
        assert!(!applies(
            &rule(none.clone(), admin),
            &caps(&["CAP_SYS_ADMIN"]),
            "amd64",
            k
        ));
        let arm = Filter {
            arches: vec!["arm64".into()],
            ..Default::default()
        };
        assert!(!applies(&rule(arm.clone(), none.clone()), &[], "amd64", k));
        assert!(applies(&rule(arm.clone(), none.clone()), &[], "arm64", k));
        assert!(!applies(&rule(none.clone(), arm), &[], "arm64", k));
        let new = Filter {
            min_kernel: "6.2".into(),
            ..Default::default()
        };
        assert!(!applies(&rule(new.clone(), none.clone()), &[], "amd64", k));
        assert!(applies(&rule(new, none), &[], "amd64", Some((6, 10))));
        assert_eq!(kernel_version("6.1.0-13-amd64"), Some((6, 1)));
    }

    #[test]
    fn nulls_as_go_writes_them_are_empty() {
        let p = parse(
            "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": 38, \
             \"archMap\": null, \"syscalls\": [{\"names\": [\"mkdir\"], \"action\": \
             \"SCMP_ACT_ALLOW\", \"args\": null, \"comment\": \"\", \"includes\": {}, \
             \"excludes\": null, \"errnoRet\": null}]}",
        )
        .unwrap();
        assert!(p.syscalls[0].args.is_empty() && p.syscalls[0].errno_ret.is_none());
        p.compile(&[]).unwrap();
    }

    #[test]
    fn unknown_syscall_names_are_skipped() {
        let p = parse(
            "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": \
             [\"no_such_syscall_yet\", \"mkdir\"], \"action\": \"SCMP_ACT_ERRNO\"}]}",
        )
        .unwrap();
        p.compile(&[]).unwrap();
    }
}
