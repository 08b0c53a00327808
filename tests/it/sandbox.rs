//! The code sandbox against hostile programs: each is contained (its test, which passes only if the
//! attack worked, fails) and reported with the right reason; afterwards no process it started is left, no
//! file outside the scratch dirs is touched, and an honest program still passes.

use crate::util::{Scratch, forge, records};
use serde_json::json;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;

/// (name, program, test that passes only if the attack worked, accepted failure codes, message part).
type Case = (&'static str, String, String, &'static [&'static str], &'static str);

fn cases(port: u16, home: &str, victim: &Path, outside: &Path) -> Vec<Case> {
    let t = |s: &str| s.to_string();
    let victim = victim.display();
    let outside = outside.display();
    let libc = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n";
    vec![
        (
            "fork_bomb",
            t(
                "import os\nwhile True:\n    if os.fork() == 0:\n        os.execv('/usr/bin/sleep', ['sleep', '4243.5'])\n",
            ),
            t("assert True"),
            &["failed_test"],
            "BlockingIOError",
        ),
        (
            "fork_bomb_python",
            t("import os\nwhile True:\n    os.fork()\n"),
            t("assert True"),
            &["failed_test", "crash", "timeout"],
            "",
        ),
        (
            "thread_bomb",
            t(
                "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n",
            ),
            t("assert True"),
            &["failed_test", "memory"],
            "Error",
        ),
        ("memory_hog", t("x = bytearray(8 << 30)\n"), t("assert len(x) > 0"), &["memory"], "MemoryError"),
        (
            "memory_creep",
            t("chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n"),
            t("assert True"),
            &["memory"],
            "MemoryError",
        ),
        ("infinite_loop", t("while True:\n    pass\n"), t("assert True"), &["timeout"], ""),
        (
            "ignores_sigterm",
            t(
                "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass\n",
            ),
            t("assert True"),
            &["timeout"],
            "",
        ),
        ("sleeps_past_timeout", t("import time\ntime.sleep(600)\n"), t("assert True"), &["timeout"], ""),
        ("stdout_flood", t("while True:\n    print('x' * 10000)\n"), t("assert True"), &["output_limit"], ""),
        (
            "stderr_flood",
            t("import sys\nwhile True:\n    sys.stderr.write('y' * 10000)\n"),
            t("assert True"),
            &["output_limit"],
            "",
        ),
        (
            "daemon_grandchild",
            t(
                "import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execv('/usr/bin/sleep', ['sleep', '4242.5'])\n    os._exit(0)\nos.wait()\n",
            ),
            t("assert False, 'the parent returned'"),
            &["failed_test"],
            "the parent returned",
        ),
        (
            "connect_host_listener",
            format!("import socket\ndef f():\n    return socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"),
            t("f()"),
            &["failed_test"],
            "ConnectionRefusedError",
        ),
        (
            "connect_outside",
            t("import socket\ndef f():\n    return socket.create_connection(('1.1.1.1', 443), timeout=2)\n"),
            t("f()"),
            &["failed_test"],
            "Network is unreachable",
        ),
        (
            "dns_lookup",
            t("import socket\ndef f():\n    return socket.getaddrinfo('pypi.org', 443)\n"),
            t("f()"),
            &["failed_test"],
            "gaierror",
        ),
        (
            "read_etc_shadow",
            t("def f():\n    return open('/etc/shadow').read()\n"),
            t("f()"),
            &["failed_test"],
            "FileNotFoundError",
        ),
        (
            "read_etc_passwd",
            t("def f():\n    return open('/etc/passwd').read()\n"),
            t("assert 'root' in f()"),
            &["failed_test"],
            "FileNotFoundError",
        ),
        (
            "list_home",
            format!("import os\ndef f():\n    return os.listdir({home:?})\n"),
            t("assert f() is not None"),
            &["failed_test"],
            "FileNotFoundError",
        ),
        (
            "read_env_secret",
            t("import os\ndef f():\n    return os.environ['FORGE_SANDBOX_SECRET']\n"),
            t("f()"),
            &["failed_test"],
            "KeyError",
        ),
        (
            "scan_proc_environ",
            t(
                "import os\ndef f():\n    hits = []\n    for p in os.listdir('/proc'):\n        try:\n            if ('hunter' + str(1 + 1)).encode() in open(f'/proc/{p}/environ', 'rb').read():\n                hits.append(p)\n        except OSError:\n            pass\n    return hits\n",
            ),
            t("assert f(), 'no secret found'"),
            &["failed_test"],
            "no secret found",
        ),
        (
            "host_pid_1",
            t("def f():\n    return open('/proc/1/cmdline', 'rb').read()\n"),
            t("assert b'bwrap' not in f(), f()"),
            &["failed_test"],
            "bwrap",
        ),
        (
            "write_outside",
            format!("def f():\n    open({outside:?}, 'w').write('escaped')\n"),
            t("f()"),
            &["failed_test"],
            "No such file or directory",
        ),
        (
            "write_usr",
            t("def f():\n    open('/usr/forge-escape', 'w').write('escaped')\n"),
            t("f()"),
            &["failed_test"],
            "Read-only file system",
        ),
        (
            "write_root",
            t("def f():\n    open('/forge-escape', 'w').write('escaped')\n"),
            t("f()"),
            &["failed_test"],
            "Read-only file system",
        ),
        (
            "symlink_escape",
            t("import os\ndef f():\n    os.symlink('/etc/passwd', 'link')\n    return open('link').read()\n"),
            t("f()"),
            &["failed_test"],
            "FileNotFoundError",
        ),
        (
            "dotdot_escape",
            t("def f():\n    return open('../../../../../etc/hostname').read()\n"),
            t("f()"),
            &["failed_test"],
            "FileNotFoundError",
        ),
        (
            "proc_self_mem",
            t(
                "def f():\n    with open('/proc/self/mem', 'r+b', buffering=0) as m:\n        m.seek(0)\n        return m.write(b'x')\n",
            ),
            t("assert f() == 1"),
            &["failed_test"],
            "Permission denied",
        ),
        (
            "proc_1_mem",
            t(
                "def f():\n    maps = open('/proc/1/maps').read().splitlines()\n    lo, hi = (int(x, 16) for x in next(l for l in maps if '[stack]' in l).split()[0].split('-'))\n    with open('/proc/1/mem', 'rb', buffering=0) as m:\n        m.seek(lo)\n        return m.read(hi - lo)\n",
            ),
            t("assert ('hunter' + str(1 + 1)).encode() in f(), 'no secret in the memory of PID 1'"),
            &["failed_test"],
            "no secret",
        ),
        (
            "kill_everyone",
            t("import os, time\nif os.fork() == 0:\n    time.sleep(60)\nos.kill(-1, 9)\n"),
            t("assert False, 'survived'"),
            &["crash"],
            "killed the sandbox's server",
        ),
        (
            "forge_a_result",
            t("import os, re\n\
               def f():\n    \
                   nonce = re.findall(r'forge-tests-done-[0-9a-f]{32}', open('/forge/jobs.py').read())[-1]\n    \
                   os.listdir(f'/proc/{os.getppid()}/fd')\n    \
                   fd = os.open(f'/proc/{os.getppid()}/fd/6', os.O_WRONLY)\n    \
                   out = f'\\n{nonce}\\n'.encode()\n    \
                   os.write(fd, b'FORGE 0 exited 0 %d 0\\n' % len(out) + out)\n    \
                   os._exit(1)\n"),
            t("f()"),
            &["failed_test"],
            // the server's descriptors cannot even be listed (it is undumpable); when forge runs as root, the
            // pipe would also refuse to open (it belongs to root), but not under an ordinary user
            "Permission denied: '/proc/2/fd'",
        ),
        (
            "ptrace_pid_1",
            format!("{libc}def f():\n    return libc.ptrace(16, 1, 0, 0)\n"),
            t("assert f() == 0, ctypes.get_errno()"),
            &["failed_test"],
            "AssertionError: 1",
        ),
        (
            "mount_tmpfs",
            format!(
                "{libc}def f():\n    os.makedirs('m', exist_ok=True)\n    return libc.mount(b'none', b'm', b'tmpfs', 0, None)\n"
            ),
            t("assert f() == 0, ctypes.get_errno()"),
            &["failed_test"],
            "AssertionError: 1",
        ),
        (
            "unshare_user",
            format!("{libc}def f():\n    return libc.unshare(0x10000000)\n"),
            t("assert f() == 0, ctypes.get_errno()"),
            &["failed_test"],
            "AssertionError: 1",
        ),
        (
            "raw_syscall_bpf",
            format!("{libc}def f():\n    return libc.syscall(321, 0, 0, 0)\n"),
            t("assert f() >= 0, ctypes.get_errno()"),
            &["failed_test"],
            "AssertionError: 1",
        ),
        (
            "setuid_root",
            t("import os\ndef f():\n    os.setuid(0)\n"),
            t("f()\nassert os.getuid() == 0"),
            &["failed_test"],
            "Invalid argument",
        ),
        (
            "raise_rlimit",
            t(
                "import resource\ndef f():\n    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n",
            ),
            t("f()"),
            &["failed_test"],
            "ValueError",
        ),
        (
            "fill_disk",
            t(
                "def f():\n    with open('big', 'wb') as out:\n        while True:\n            out.write(b'0' * (1 << 20))\n",
            ),
            t("f()"),
            &["failed_test"],
            "OSError",
        ),
        (
            "hundred_thousand_files",
            t(
                "import os\ndef f():\n    for i in range(100_000):\n        open(f'f{i}', 'w').close()\n    return len(os.listdir('.'))\n",
            ),
            t("assert f() < 0, 'made the files'"),
            &["failed_test", "timeout"],
            "",
        ),
        (
            "huge_argv",
            t("import os\ndef f():\n    os.execv('/usr/bin/true', ['true'] + ['x' * 100_000] * 100)\n"),
            t("f()"),
            &["failed_test"],
            "Argument list too long",
        ),
        (
            "delete_other_scratch",
            format!("import shutil\ndef f():\n    shutil.rmtree({victim:?})\n"),
            t("f()"),
            &["failed_test"],
            "FileNotFoundError",
        ),
        (
            "stack_overflow",
            t("import sys\nsys.setrecursionlimit(10**8)\nnested = []\nfor _ in range(10**5):\n    nested = [nested]\n"),
            t("repr(nested)"),
            &["crash"],
            "SIGSEGV",
        ),
        ("segfault", t("import ctypes\nctypes.string_at(0)\n"), t("assert True"), &["crash"], "SIGSEGV"),
        (
            "inherited_fds",
            t(
                "import os\ndef f():\n    n = 0\n    for fd in os.listdir('/proc/self/fd'):\n        try:\n            n += os.write(int(fd), b'escaped') > 0 and int(fd) > 2\n        except OSError:\n            pass\n    return n\n",
            ),
            t("assert f() > 0, 'no descriptor to write to'"),
            &["failed_test"],
            "no descriptor",
        ),
        (
            "exits_early",
            t("import sys\nsys.exit(0)\n"),
            t("assert False"),
            &["failed_test"],
            "exited before the test finished",
        ),
    ]
}

/// Every hostile program is contained and reported with its reason; nothing is left behind.
#[test]
#[ignore = "needs bubblewrap: .ci/run installs it"]
fn hostile_programs_are_contained() {
    let dir = Scratch::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let victim = dir.path("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), "a finished run's file").unwrap();
    let outside = dir.path("escaped.txt");
    let cases = cases(port, &home, &victim, &outside);
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut rows: Vec<serde_json::Value> = cases
        .iter()
        .map(|(name, program, test, _, _)| {
            json!({"id": name, "domain": "code", "tests": [test], "completion": format!("```python\n{program}```")})
        })
        .collect();
    let honest = "```python\ndef add(a, b):\n    return a + b\n```";
    rows.push(json!({"id": "honest", "domain": "code", "tests": ["assert add(2, 3) == 5"], "completion": honest}));
    let input = dir.write("hostile.jsonl", crate::util::jsonl(&rows));
    let output = dir.path("verdicts.jsonl");
    // A descriptor forge inherits (as from the shell that started it) that the programs must not reach.
    let mut pipe = [0; 2];
    // SAFETY: plain syscalls on descriptors this test owns.
    unsafe {
        assert_eq!(libc::pipe2(pipe.as_mut_ptr(), libc::O_NONBLOCK), 0);
    }
    let status = forge()
        .args(["verify", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--sandbox-timeout", "3", "--sandbox-memory", "512", "--sandbox-concurrency", "4"])
        .env("FORGE_SANDBOX_SECRET", "hunter2")
        .status()
        .unwrap();
    assert!(status.success());
    let verdicts = records(&output);
    let mut wrong = Vec::new();
    for (v, (name, _, _, failures, message)) in verdicts.iter().zip(&cases) {
        assert_eq!(v["id"], *name);
        let failed: Vec<&str> = v["failed"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        let error = v["test_error"].as_str().unwrap_or("");
        let reason_ok = failed.len() == 1 && failures.contains(&failed[0]);
        if v["correct"] != json!(false) || !reason_ok || !error.contains(message) {
            wrong.push(format!("{name}: correct {} failed {failed:?} error {error:?}", v["correct"]));
        }
    }
    assert!(wrong.is_empty(), "{} hostile programs misjudged:\n{}", wrong.len(), wrong.join("\n"));
    let honest = verdicts.last().unwrap();
    assert_eq!((&honest["id"], &honest["correct"]), (&json!("honest"), &json!(true)), "{honest:?}");

    let mut buf = [0u8; 64];
    // SAFETY: as above; the read end is non-blocking.
    let (read, _) = unsafe { (libc::read(pipe[0], buf.as_mut_ptr().cast(), buf.len()), libc::close(pipe[1])) };
    assert_eq!(read, -1, "a program wrote to a descriptor forge inherited: {:?}", &buf[..read.max(0) as usize]);
    listener.set_nonblocking(true).unwrap();
    assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock, "a program reached the host's port");
    assert!(!outside.exists(), "a program wrote outside its scratch dir");
    assert!(victim.join("keep").exists(), "a program deleted another directory");
    let strays = processes_with(&["4242.5", "4243.5"]);
    assert!(strays.is_empty(), "processes left behind: {strays:?}");
}

/// The command lines of live processes that contain one of `marks`.
fn processes_with(marks: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if marks.iter().any(|m| cmdline.contains(m)) {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// A program that returns something else than `entry` does: numbers off by one, booleans flipped, one
/// more item in sequences and text, `0` for `None` (a wrong return wrapped around the reference).
fn broken(program: &str, entry: &str) -> String {
    format!(
        "{program}\n\n_forge_reference = {entry}\n\ndef {entry}(*args, **kwargs):\n    \
         r = _forge_reference(*args, **kwargs)\n    \
         if isinstance(r, bool): return not r\n    \
         if isinstance(r, (int, float)): return r + 1\n    \
         if isinstance(r, str): return r + 'x'\n    \
         if isinstance(r, list): return r + [None]\n    \
         if isinstance(r, tuple): return r + (None,)\n    \
         if isinstance(r, (set, dict)): return None\n    \
         return 0 if r is None else None\n"
    )
}

/// HumanEval's canonical solutions and MBPP's reference code pass their tests through `forge verify`; a
/// broken variant of each fails. Upstream items that fail on their own are listed here with the reason.
#[test]
#[ignore = "needs ../shared/data and bubblewrap"]
fn reference_solutions_pass_and_broken_ones_fail() {
    let dir = Scratch::new();
    let mut rows = Vec::new();
    for (preset, file) in [("humaneval", "humaneval/HumanEval.jsonl"), ("mbpp", "mbpp/mbpp.jsonl")] {
        let out = dir.path(preset);
        crate::util::ok(&[&"import", &"--preset", &preset, &crate::util::shared_data(file), &"-o", &out, &"-q"]);
        for p in crate::util::problems(&out) {
            let meta: serde_json::Value = serde_json::from_str(&p.metadata).unwrap();
            let body = &p.steps.as_ref().unwrap()[0].text;
            let tests = p.tests.clone().unwrap();
            let (program, entry) = if preset == "humaneval" {
                (format!("{}{body}", p.prompt), meta["entry_point"].as_str().unwrap().to_string())
            } else {
                // the function the tests call: the first one the reference defines that the first test names
                let defined = body.lines().filter_map(|l| l.strip_prefix("def ")?.split('(').next());
                let test = tests[0].replace(" (", "(");
                let calls = |name: &str| {
                    test.match_indices(&format!("{name}("))
                        .any(|(i, _)| !test[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '.'))
                };
                let entry = defined.clone().find(|name| calls(name.trim()));
                let entry = entry.unwrap_or_else(|| panic!("{}: no function of the reference in its test", p.id));
                (body.clone(), entry.trim().to_string())
            };
            for (kind, code) in [("reference", program.clone()), ("broken", broken(&program, &entry))] {
                rows.push(json!({
                    "id": format!("{}/{kind}", p.id), "domain": "code", "tests": tests,
                    "completion": format!("The solution:\n\n```python\n{code}\n```\n"),
                }));
            }
        }
    }
    let input = dir.write("rows.jsonl", crate::util::jsonl(&rows));
    let output = dir.path("verdicts.jsonl");
    crate::util::ok(&[&"verify", &"--input", &input, &"--output", &output, &"-q"]);
    let mut unexpected = Vec::new();
    let (mut references, mut broken_caught) = (0, 0);
    for v in records(&output) {
        let id = v["id"].as_str().unwrap();
        let reference = id.ends_with("/reference");
        if v["correct"] == json!(reference) {
            if reference { references += 1 } else { broken_caught += 1 }
        } else if !KNOWN_UPSTREAM.iter().any(|(known, _)| *known == id) {
            unexpected.push(format!("{id}: {} {}", v["failed"], v["test_error"]));
        }
    }
    assert!(unexpected.is_empty(), "{} unexpected verdicts:\n{}", unexpected.len(), unexpected.join("\n"));
    assert_eq!(references + broken_caught + KNOWN_UPSTREAM.len(), rows.len());
}

/// Upstream items whose reference fails its own tests, or whose tests cannot tell a wrong return.
const KNOWN_UPSTREAM: &[(&str, &str)] = &[];

/// `forge filter` on code traces: a program that passes its tests is kept, one that fails is rejected as
/// `incorrect` with the failing test in the detail, and the pass-rate window counts programs that pass.
#[test]
#[ignore = "needs bubblewrap: .ci/run installs it"]
fn filter_judges_code_by_its_tests() {
    let dir = Scratch::new();
    let tests = json!(["assert double(2) == 4", "assert double(-3) == -6", "assert double(0) == 0"]);
    let program = |body: &str| format!("Here it is.\n\n```python\ndef double(x):\n    return {body}\n```\n");
    let code = |id: &str, sample: u32, body: &str| {
        let prompt = format!("Write double(x), problem {id}.");
        let mut row = crate::util::trace(id, sample, &prompt, None, &program(body));
        row["domain"] = json!("code");
        row["tests"] = tests.clone();
        row
    };
    let rows = [code("p1", 0, "2 * x"), code("p1", 1, "x + 2"), code("p2", 0, "x * 2"), code("p2", 1, "x << 1")];
    let input = dir.write("traces.jsonl", crate::util::jsonl(&rows));
    let out = dir.path("curated");
    crate::util::ok(&[&"filter", &"--input", &input, &"-o", &out, &"-q"]);
    let kept: Vec<String> = records(&out).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(kept, ["p1#0", "p2#0", "p2#1"]);
    let rejected = crate::util::rejected(&out);
    let (reason, detail) = &rejected["p1#1"];
    assert_eq!(reason, "incorrect");
    assert_eq!(detail["error"], json!("test 2 of 3: AssertionError"), "{detail}");

    // a window of at most half the samples passing drops p2, whose programs all pass
    let windowed = dir.path("windowed");
    crate::util::ok(&[&"filter", &"--input", &input, &"-o", &windowed, &"--pass-rate", &"0:0.5", &"-q"]);
    let kept: Vec<String> = records(&windowed).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(kept, ["p1#0"]);
}

/// The APPS/TACO, CodeContests and LiveCodeBench presets (fixtures in their layouts, written by
/// `scripts/code_import_fixtures.py`): standard-input cases and call-based ones both judge a right program
/// right and a wrong one wrong, LiveCodeBench's packed private cases included.
#[test]
#[ignore = "needs bubblewrap: .ci/run installs it"]
fn stdin_and_call_based_tests_from_the_code_presets() {
    let dir = Scratch::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/code");
    let mut problems = std::collections::BTreeMap::new();
    for preset in ["apps", "codecontests", "livecodebench"] {
        let out = dir.path(preset);
        let file = fixtures.join(format!("{preset}.jsonl"));
        crate::util::ok(&[&"import", &"--preset", &preset, &file, &"-o", &out, &"-q"]);
        problems.extend(crate::util::problems(&out).into_iter().map(|p| (p.id.clone(), p)));
    }
    let tests = |id: &str| problems[id].tests.clone().unwrap();
    assert_eq!(tests("1000_A. Largest").len(), 3, "public and private cases, not the generated one");
    assert_eq!(tests("abc300_a").len(), 2, "the packed private case is read");
    let reference = |id: &str| problems[id].steps.as_ref().unwrap()[0].text.clone();
    let cases = [
        ("4001", reference("4001"), true),
        ("4001", "a, b = map(int, input().split())\nprint(a - b)\n".to_string(), false),
        ("4002", reference("4002"), true),
        ("4002", "class Solution:\n    def count(self, s):\n        return len(s)\n".to_string(), false),
        ("1000_A. Largest", reference("1000_A. Largest"), true),
        ("1000_A. Largest", "input()\nprint(min(map(int, input().split())))\n".to_string(), false),
        ("abc300_a", "print(sum(map(int, input().split())))".to_string(), true),
        ("abc300_a", "print(5)".to_string(), false),
        ("lc-2000", "class Solution:\n    def twice(self, x):\n        return 2 * x\n".to_string(), true),
        ("lc-2000", "class Solution:\n    def twice(self, x):\n        return x + 4\n".to_string(), false),
    ];
    let rows: Vec<serde_json::Value> = cases
        .iter()
        .map(|(id, code, _)| json!({"id": id, "domain": "code", "tests": tests(id), "completion": format!("```python\n{code}\n```")}))
        .collect();
    let input = dir.write("rows.jsonl", crate::util::jsonl(&rows));
    let output = dir.path("verdicts.jsonl");
    crate::util::ok(&[&"verify", &"--input", &input, &"--output", &output, &"-q"]);
    for (v, (id, _, right)) in records(&output).iter().zip(&cases) {
        assert_eq!(v["correct"], json!(right), "{id}: {v:?}");
    }
    let wrong_sum = &records(&output)[1];
    assert_eq!(wrong_sum["test_error"], json!("test 1 of 2: wrong output: token 1 is `-1`, expected `3`"));
}

/// `forge eval` on code problems scores the samples by running them: the sample teacher writes arithmetic,
/// not Python, so the program is put in the completion with `--prefill` (the teacher continues after it; the
/// last fenced block is still the prefilled one). A program that solves both APPS fixtures (a stdin/stdout
/// problem and a call-based one) gives pass@1 = pass@2 = 1, a wrong one 0; the traces carry the tests.
#[test]
#[ignore = "needs bubblewrap: .ci/run installs it"]
fn eval_scores_code_samples_by_their_tests() {
    let dir = Scratch::new();
    let problems = dir.path("apps");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/code/apps.jsonl");
    crate::util::ok(&[&"import", &"--preset", &"apps", &fixture, &"-o", &problems, &"-q"]);
    let program = |sum: &str, count: &str| {
        format!(
            "```python\nimport sys\n\nclass Solution:\n    def count(self, s):\n        return {count}\n\n\
             if __name__ == '__main__':\n    a, b = map(int, sys.stdin.read().split())\n    print({sum})\n```\n\n"
        )
    };
    for (name, prefill, score) in
        [("right", program("a + b", "sum(c in 'aeiou' for c in s)"), 1.0), ("wrong", program("a - b", "len(s)"), 0.0)]
    {
        let out = dir.path(name);
        let teacher = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tiny-teacher");
        let json = crate::util::ok(&[
            &"eval",
            &"--model",
            &teacher,
            &"--problems",
            &problems,
            &"-n",
            &"2",
            &"--temperature",
            &"0.8",
            &"--max-tokens",
            &"16",
            &"--prefill",
            &prefill,
            &"-o",
            &out,
            &"--json",
            &"-q",
        ]);
        let report: serde_json::Value = serde_json::from_str(&json).unwrap();
        let overall = &report["overall"];
        assert_eq!((overall["problems"].as_u64(), overall["samples"].as_u64()), (Some(2), Some(4)), "{name}");
        assert_eq!(
            (overall["pass_at_1"].as_f64(), overall["pass_at_n"].as_f64()),
            (Some(score), Some(score)),
            "{name}"
        );
        assert!(records(&out).iter().all(|t| t["tests"].as_array().is_some_and(|tests| tests.len() == 2)));
    }
}
