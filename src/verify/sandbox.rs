//! The code sandbox: model-written Python programs run in bubblewrap (Flatpak's `bwrap`, from the
//! distribution's packages), never in forge's process nor with the user's rights unconstrained.
//!
//! Each sandbox (one per output: its tests, one after another) gets new user, PID, mount, network, IPC, UTS
//! and cgroup namespaces; a root of its own with `/usr` (and the interpreter's prefix) read-only, a fresh
//! `/proc` and `/dev`, no `/etc`, no home, no host `/tmp` (`/tmp` links to `/sandbox`); one writable place,
//! `/sandbox`, a size-capped tmpfs that vanishes with it; no network but its own loopback; an empty
//! environment. Limits: address space, CPU seconds, file size and open files (rlimits on the whole tree),
//! processes (an rlimit counted inside the sandbox's own user namespace, so sandboxes do not share it),
//! output bytes, and a wall-clock timeout per test. A seccomp filter refuses the system calls a test never
//! needs and the kernel exposes most to attack (`ptrace`, `mount` and the new mount API, `unshare`/`setns`,
//! `bpf`, `perf_event_open`, `userfaultfd`, `io_uring`, keyrings, modules). When forge runs as root, bwrap
//! itself runs as `nobody` (65534), so the sandbox has no privilege to give up.
//!
//! Inside, forge's fork server (`sandbox_server.py`) forks each test from one interpreter, times it, kills
//! every other process after it and empties `/sandbox`; it reports on a descriptor the tests do not have.
//! forge keeps a backstop: past every test's timeout it kills bwrap, whose death ends the PID namespace and
//! every process in it.
//!
//! Why bubblewrap rather than forge's own `clone` + `unshare`: it is the setup code Flatpak runs on
//! millions of desktops, packaged by every distribution, and the same few hundred lines written again here
//! would be less tested. forge adds what bwrap leaves to its caller: rlimits, the seccomp filter, timeouts,
//! output caps and the server.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Seconds a test program may run (wall clock) when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: f64 = 10.0;
/// Memory a test program may use, in MiB, when not given.
pub const DEFAULT_MEMORY_MB: u64 = 1024;
/// The Python interpreter test programs run with, when not given.
pub const DEFAULT_PYTHON: &str = "/usr/bin/python3";
/// Processes and threads one sandbox may have at once.
const MAX_PROCESSES: u32 = 32;
/// The scratch directory's size, and the largest file a run may write.
const SCRATCH_BYTES: u64 = 64 << 20;
/// Bytes of stdout or stderr kept; a run that writes more is killed (`output_limit`).
const MAX_OUTPUT: usize = 1 << 20;
const MAX_OPEN_FILES: u64 = 256;
const NOBODY: u32 = 65534;

/// How test programs run.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Wall-clock time a run may take.
    pub timeout: Duration,
    /// Memory a run may use, in MiB.
    pub memory_mb: u64,
    /// The Python interpreter.
    pub python: PathBuf,
    /// Runs at once, across all threads of the process.
    pub concurrency: usize,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The program exited with this code.
    Exited(i32),
    /// A signal ended it (a crash, or its CPU-time limit: `SIGXCPU`, then `SIGKILL`).
    Signaled(i32),
    /// It ran past the wall-clock timeout and was killed.
    Timeout,
    /// It wrote more than the output cap and was killed.
    OutputLimit,
    /// Its result never came: a program of the same sandbox killed forge's server.
    Lost,
}

/// One finished run.
#[derive(Debug, Clone)]
pub struct Run {
    /// How it ended.
    pub status: Status,
    /// What it wrote to standard output (at most 1 MiB).
    pub stdout: Vec<u8>,
    /// What it wrote to standard error (at most 1 MiB).
    pub stderr: Vec<u8>,
}

/// What the sandbox runs with, found once per interpreter: recorded in every code verdict.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The verifier, the interpreter and bwrap, with versions (`forge-verify/0.1.0+python-3.11.2+bwrap-0.8.0`):
    /// the `verifier` column of code verdicts.
    pub verifier: String,
    /// Host directories the interpreter needs outside `/usr` (a pyenv or conda prefix), bound read-only.
    binds: Vec<PathBuf>,
    /// bwrap, found on `PATH` once: it starts with an empty environment.
    bwrap: PathBuf,
}

/// Whether the sandbox can run here: bwrap present and user namespaces allowed, the interpreter found.
/// The answer is kept per interpreter; an error says what is missing and how to get it.
pub fn probe(python: &Path) -> Result<&'static Probe, String> {
    static PROBES: Mutex<Vec<(PathBuf, Result<&'static Probe, String>)>> = Mutex::new(Vec::new());
    let mut probes = PROBES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, found)) = probes.iter().find(|(p, _)| p == python) {
        return found.clone();
    }
    let found = find_probe(python).map(|p| &*Box::leak(Box::new(p)));
    probes.push((python.to_path_buf(), found.clone()));
    found
}

fn find_probe(python: &Path) -> Result<Probe, String> {
    let missing = "code runs in bubblewrap; install it (Debian/Ubuntu: `apt-get install bubblewrap`)";
    let path = std::env::var_os("PATH").unwrap_or_default();
    let bwrap_path = std::env::split_paths(&path)
        .map(|dir| dir.join("bwrap"))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no `bwrap` on PATH: {missing}"))?;
    let bwrap = Command::new(&bwrap_path)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run `bwrap` ({e}): {missing}"))?;
    let bwrap_version = String::from_utf8_lossy(&bwrap.stdout).trim().replace("bubblewrap ", "");
    let script = "import sys; print(sys.version.split()[0]); print(sys.prefix); print(sys.base_prefix)";
    let out = Command::new(python).args(["-I", "-c", script]).output().map_err(|e| {
        format!("cannot run the sandbox's Python `{}` ({e}); name another with `--sandbox-python`", python.display())
    })?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let version = lines.next().filter(|v| out.status.success() && v.starts_with('3')).ok_or_else(|| {
        format!(
            "`{} -I -c …` did not report a Python 3 version; name another with `--sandbox-python`",
            python.display()
        )
    })?;
    let mut binds: Vec<PathBuf> = lines.map(PathBuf::from).filter(|p| !p.starts_with("/usr")).collect();
    if let Some(dir) = python.parent().filter(|d| !d.starts_with("/usr") && !binds.iter().any(|b| d.starts_with(b))) {
        binds.push(dir.to_path_buf());
    }
    binds.dedup();
    let verifier = format!("{}+python-{version}+bwrap-{bwrap_version}", super::VERIFIER);
    let probe = Probe { verifier, binds, bwrap: bwrap_path };
    let job = Job { program: "print(6 * 7)".into(), stdin: String::new(), main: true };
    let check = run_with(&probe, &Limits::default(), &[job])
        .map_err(|e| format!("bubblewrap cannot start a sandbox here: {e}"))?
        .remove(0);
    if check.status != Status::Exited(0) || check.stdout != b"42\n" {
        return Err(format!(
            "bubblewrap cannot start a sandbox here ({:?}): {}",
            check.status,
            String::from_utf8_lossy(&check.stderr).trim()
        ));
    }
    Ok(probe)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs_f64(DEFAULT_TIMEOUT),
            memory_mb: DEFAULT_MEMORY_MB,
            python: PathBuf::from(DEFAULT_PYTHON),
            concurrency: 1,
        }
    }
}

/// (running, allowed) and the condition runs wait on for a slot: at most `concurrency` runs at once,
/// whoever starts them (`forge verify`, the filter's and eval's threads).
static SLOTS: (Mutex<(usize, usize)>, Condvar) = (Mutex::new((0, 1)), Condvar::new());

struct Slot;

impl Slot {
    fn take(concurrency: usize) -> Slot {
        let (slots, freed) = &SLOTS;
        let mut s = slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.1 = concurrency.max(1);
        while s.0 >= s.1 {
            s = freed.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        s.0 += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (slots, freed) = &SLOTS;
        slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0 -= 1;
        freed.notify_one();
    }
}

/// One program to run: its source, its standard input, and whether it runs as `__main__` (a script) or as a
/// module named `__sandbox__` (its `if __name__ == "__main__":` block skipped, as in HumanEval's harness).
#[derive(Debug, Clone)]
pub struct Job {
    /// The Python source.
    pub program: String,
    /// Its standard input.
    pub stdin: String,
    /// Run as `__main__` (a script), else as a module whose main block is skipped.
    pub main: bool,
}

/// Run `jobs` in one fresh sandbox, one after another, each in a process forked from forge's server inside
/// it (`sandbox_server.py`): no interpreter start-up per job. The jobs of one call share the sandbox (the
/// tests of one program); every call gets its own. Each job has the timeout; a job whose result never came
/// (a program killed the server) is [`Status::Lost`].
pub fn run_all(limits: &Limits, jobs: &[Job]) -> Result<Vec<Run>, String> {
    let probe = probe(&limits.python)?;
    let _slot = Slot::take(limits.concurrency);
    run_with(probe, limits, jobs)
}

fn run_with(probe: &Probe, limits: &Limits, jobs: &[Job]) -> Result<Vec<Run>, String> {
    let started = Instant::now();
    let filter = memfd("seccomp", &seccomp_filter())?;
    let listing = memfd("jobs.py", python_literal(jobs).as_bytes())?;
    let (status_read, status_write) = pipe()?;
    let (results_read, results_write) = pipe()?;
    let mut cmd = bwrap_command(probe, limits);
    let fds = [filter.as_raw_fd(), listing.as_raw_fd(), status_write.as_raw_fd(), results_write.as_raw_fd()];
    // The server lives through every job (each child lowers the CPU limit to its own test's).
    let (memory, cpu) = (limits.memory_mb << 20, cpu_seconds(limits) * (jobs.len() as u64 + 1));
    // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2, setrlimit, set*id), no
    // allocation.
    unsafe {
        cmd.pre_exec(move || {
            // Each descriptor is first copied above 9 (closed at exec), so that placing one on 3 to 6 cannot
            // overwrite another still to be placed.
            for (i, fd) in fds.into_iter().enumerate() {
                let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if high < 0 || libc::dup2(high, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Whatever else forge inherited (a pipe of the shell that started it) must not reach the program.
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;
            if libc::syscall(libc::SYS_close_range, 7, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                for fd in 7..4096 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            let limits = [
                (libc::RLIMIT_AS, memory),
                (libc::RLIMIT_CPU, cpu),
                (libc::RLIMIT_FSIZE, SCRATCH_BYTES),
                (libc::RLIMIT_NOFILE, MAX_OPEN_FILES),
                (libc::RLIMIT_CORE, 0),
            ];
            for (resource, value) in limits {
                let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
                if libc::setrlimit(resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::geteuid() == 0
                && (libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start `bwrap`: {e}"))?;
    drop((filter, listing, status_write, results_write));
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel::<std::io::Result<std::process::ExitStatus>>();
    let frames_cap = jobs.len() * (2 * MAX_OUTPUT + 128);
    let readers = [
        (child.stdout.take().expect("piped").into(), MAX_OUTPUT),
        (child.stderr.take().expect("piped").into(), MAX_OUTPUT),
        (results_read, frames_cap),
    ]
    .map(|(pipe, cap): (OwnedFd, usize)| std::thread::spawn(move || read_capped(std::fs::File::from(pipe), cap)));
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    // The server times each job; this is the backstop should it hang.
    let backstop = limits.timeout * (jobs.len() as u32 + 1) + Duration::from_secs(5);
    let overran = match rx.recv_timeout(backstop.saturating_sub(started.elapsed())) {
        Ok(status) => {
            status.map_err(|e| format!("waiting for the sandbox: {e}"))?;
            false
        }
        Err(_) => {
            kill(pid); // its death ends the PID namespace, and so the pipes
            true
        }
    };
    let [_, err, frames] = readers.map(|r| r.join().unwrap_or_default());
    let _ = waiter.join();
    // bwrap reports the server's PID once it started it: without that line its own set-up failed, which is
    // forge's problem to report, not a program's failure (no program can write to this pipe).
    let mut report = String::new();
    let _ = std::fs::File::from(status_read).read_to_string(&mut report);
    if !report.contains("child-pid") && !overran {
        return Err(format!("bwrap could not set up the run: {}", String::from_utf8_lossy(&err).trim()));
    }
    let lost = if overran { Status::Timeout } else { Status::Lost };
    let runs = parse_frames(&frames, jobs.len());
    Ok(runs.into_iter().map(|r| r.unwrap_or(Run { status: lost, stdout: Vec::new(), stderr: Vec::new() })).collect())
}

/// The jobs as the server reads them: a Python list of `(program, stdin, as_main)` (JSON's string escapes
/// are Python's; no JSON parser to import in the sandbox).
fn python_literal(jobs: &[Job]) -> String {
    let string = |s: &str| serde_json::Value::from(s).to_string();
    let items: Vec<String> = jobs
        .iter()
        .map(|j| format!("({}, {}, {})", string(&j.program), string(&j.stdin), if j.main { "True" } else { "False" }))
        .collect();
    format!("[{}]", items.join(",\n"))
}

/// CPU seconds a job may use: its timeout, rounded up.
fn cpu_seconds(limits: &Limits) -> u64 {
    limits.timeout.as_secs_f64().ceil() as u64 + 1
}

/// The runs the server reported, by job; a frame that does not parse ends the reading (a program may have
/// written into the stream: the jobs after it are lost, the verdicts before it stand).
fn parse_frames(mut rest: &[u8], jobs: usize) -> Vec<Option<Run>> {
    let mut runs = vec![None; jobs];
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let header = String::from_utf8_lossy(&rest[..end]);
        let f: Vec<&str> = header.split(' ').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<usize>().ok());
        let (Some(job), Some(code), Some(out), Some(err)) = (num(1), num(3), num(4), num(5)) else { break };
        let body = &rest[end + 1..];
        if f[0] != "FORGE" || job >= jobs || body.len() < out + err {
            break;
        }
        let status = match f[2] {
            "exited" => Status::Exited(code as i32),
            "signaled" => Status::Signaled(code as i32),
            "timeout" => Status::Timeout,
            "output_limit" => Status::OutputLimit,
            _ => break,
        };
        if runs[job].is_none() {
            runs[job] = Some(Run { status, stdout: body[..out].to_vec(), stderr: body[out..out + err].to_vec() });
        }
        rest = &body[out + err..];
    }
    runs
}

/// Read a pipe to its end, keeping the first `cap` bytes.
fn read_capped(mut pipe: std::fs::File, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    kept
}

/// SIGKILL bwrap (its process group): `--die-with-parent` and the PID namespace take the rest.
fn kill(pid: i32) {
    // SAFETY: plain syscalls on a process this run started (and has not reaped: the waiter holds it).
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

fn bwrap_command(probe: &Probe, limits: &Limits) -> Command {
    let mut cmd = Command::new(&probe.bwrap);
    // bwrap's own processes stay in the sandbox (its PID 1 reaps), and their environment can be read there.
    cmd.env_clear();
    cmd.args(["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]);
    cmd.args(["--uid", "65534", "--gid", "65534", "--hostname", "sandbox", "--cap-drop", "ALL"]);
    cmd.args(["--ro-bind", "/usr", "/usr"]);
    // Merged-/usr systems link these into /usr; older ones keep real directories.
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::read_link(top) {
            Ok(target) => {
                cmd.arg("--symlink").arg(target).arg(top);
            }
            Err(_) if Path::new(top).is_dir() => {
                cmd.args(["--ro-bind", top, top]);
            }
            Err(_) => {}
        }
    }
    for dir in &probe.binds {
        cmd.arg("--ro-bind").arg(dir).arg(dir);
    }
    cmd.args(["--proc", "/proc", "--dev", "/dev", "--symlink", "/sandbox", "/tmp"]);
    cmd.args(["--size", &SCRATCH_BYTES.to_string(), "--perms", "0700", "--tmpfs", "/sandbox"]);
    cmd.args(["--ro-bind-data", "4", "/forge/jobs.py", "--remount-ro", "/", "--chdir", "/sandbox"]);
    cmd.args(["--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/sandbox"]);
    cmd.args(["--setenv", "TMPDIR", "/sandbox", "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0"]);
    cmd.args(["--json-status-fd", "5", "--seccomp", "3", "--"]).arg(&limits.python);
    let server = include_str!("sandbox_server.py")
        .replace("{max_processes}", &MAX_PROCESSES.to_string())
        .replace("{timeout}", &limits.timeout.as_secs_f64().to_string())
        .replace("{cpu}", &cpu_seconds(limits).to_string())
        .replace("{max_output}", &MAX_OUTPUT.to_string());
    cmd.args(["-I", "-B", "-c", &server]);
    cmd
}

/// A pipe (read end, write end), both closed at exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: a plain syscall filling `fds`, whose descriptors are owned here after.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// An anonymous in-memory file holding `data`, positioned at its start, for bwrap to read.
fn memfd(name: &str, data: &[u8]) -> Result<OwnedFd, String> {
    let cname = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: a plain syscall; the fd it returns is owned here.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(data).map_err(|e| format!("writing {name}: {e}"))?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).map_err(|e| format!("seeking {name}: {e}"))?;
    Ok(file.into())
}

/// System calls refused with `EPERM`: none is needed to run a test, each is kernel attack surface or a way
/// to look outside the run (other architectures' and x32 calls are refused as well).
fn blocked_syscalls() -> Vec<libc::c_long> {
    let mut calls = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_syslog,
        libc::SYS_vhangup,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([libc::SYS_iopl, libc::SYS_ioperm]);
    calls
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// A classic-BPF seccomp program (`struct sock_filter[]`, native byte order), as bwrap's `--seccomp` reads it.
fn seccomp_filter() -> Vec<u8> {
    const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    const ALLOW: u32 = 0x7fff_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;
    const ERRNO_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    let calls = blocked_syscalls();
    let mut prog: Vec<(u16, u8, u8, u32)> = vec![
        (LD_ABS, 0, 0, 4), // seccomp_data.arch
        (JEQ, 1, 0, AUDIT_ARCH),
        (RET, 0, 0, KILL_PROCESS),
        (LD_ABS, 0, 0, 0), // seccomp_data.nr
    ];
    // The jumps land on the last instruction, the refusal; `deny` is the distance from instruction `at`.
    let last = prog.len() + 1 + calls.len() + 1;
    let deny = |at: usize| (last - at - 1) as u8;
    prog.push((JGE, deny(prog.len()), 0, 0x4000_0000)); // x32 system calls
    for nr in calls {
        prog.push((JEQ, deny(prog.len()), 0, nr as u32));
    }
    prog.push((RET, 0, 0, ALLOW));
    prog.push((RET, 0, 0, ERRNO_EPERM));
    prog.iter()
        .flat_map(|&(code, jt, jf, k)| {
            let mut b = code.to_ne_bytes().to_vec();
            b.extend([jt, jf]);
            b.extend(k.to_ne_bytes());
            b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal is the last instruction and every jump to it lands there.
    #[test]
    fn seccomp_jumps_land_on_the_refusal() {
        let bytes = seccomp_filter();
        let n = bytes.len() / 8;
        for (i, ins) in bytes.chunks(8).enumerate() {
            let code = u16::from_ne_bytes([ins[0], ins[1]]);
            if code == 0x15 && i > 1 || code == 0x35 {
                assert_eq!(i + 1 + ins[2] as usize, n - 1, "instruction {i}");
            }
        }
        let last = &bytes[bytes.len() - 8..];
        assert_eq!(u32::from_ne_bytes([last[4], last[5], last[6], last[7]]), 0x0005_0001);
    }
}
