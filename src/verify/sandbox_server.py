# forge's fork server, the command of one sandbox (src/verify/sandbox.rs): it runs the jobs of
# /forge/jobs.py (a Python literal forge writes: [(program, stdin, as_main), ...]) one after another, each in a
# forked child (no interpreter start-up per test), and writes a frame per job to descriptor 6, which the
# children do not have, and cannot reopen through /proc: the server makes itself undumpable first.
#   FORGE <job> <exited|signaled|timeout|output_limit> <code> <stdout bytes> <stderr bytes>\n<stdout><stderr>
# After each job every process but this one is killed (the job's daemons with it) and /sandbox is emptied.
# The limits below are filled in by forge. Imports are few and cheap (`json` and `signal` would add half
# again to the start-up).
import ctypes
import os
import resource
import select
import time

MAX_PROCESSES, TIMEOUT, CPU, MAX_OUTPUT = {max_processes}, {timeout}, {cpu}, {max_output}
RESULTS = 6
SIGKILL, PR_SET_DUMPABLE = 9, 4


def wipe(top="/sandbox"):
    for root, dirs, files in os.walk(top, topdown=False):
        for name in files + dirs:
            path = os.path.join(root, name)
            try:
                os.rmdir(path) if name in dirs and not os.path.islink(path) else os.unlink(path)
            except OSError:
                pass


def child(program, as_main, stdin, out, err):
    os.dup2(stdin, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in (stdin, out, err, RESULTS):
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_CPU, (CPU, CPU))
    import sys

    path = "/sandbox/main.py"
    scope = {"__name__": "__main__" if as_main else "__sandbox__", "__file__": path, "__builtins__": __builtins__}
    code = 0
    try:
        exec(compile(program, path, "exec"), scope)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = (e.code or 0) & 0xFF
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code = code or 120
    os._exit(code)


def kill_others():
    try:
        os.kill(-1, SIGKILL)  # every process this user has here but this one and PID 1
    except ProcessLookupError:
        pass


def run(program, stdin_text, as_main):
    stdin = os.memfd_create("stdin")
    data = stdin_text.encode()
    while data:
        data = data[os.write(stdin, data):]
    os.lseek(stdin, 0, os.SEEK_SET)
    (r_out, w_out), (r_err, w_err) = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r_out)
        os.close(r_err)
        child(program, as_main, stdin, w_out, w_err)
    for fd in (stdin, w_out, w_err):
        os.close(fd)
    exited = os.pidfd_open(pid)
    got = {r_out: bytearray(), r_err: bytearray()}
    reading, watch, status, deadline = {r_out, r_err}, [exited], None, time.monotonic() + TIMEOUT
    while reading and status is None:
        left = deadline - time.monotonic()
        ready = select.select(list(reading) + watch, [], [], left)[0] if left > 0 else []
        if not ready:
            status = "timeout"
        for fd in ready:
            if fd == exited:
                kill_others()  # the child is done: whatever still holds its pipes goes now
                watch = []
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                reading.discard(fd)
            got[fd] += chunk
            if len(got[fd]) > MAX_OUTPUT:
                status = "output_limit"
    kill_others()
    wait = os.waitpid(pid, 0)[1]
    for fd in (r_out, r_err, exited):
        os.close(fd)
    wipe()
    if status is not None:
        code = 0
    elif os.WIFSIGNALED(wait):
        status, code = "signaled", os.WTERMSIG(wait)
    else:
        status, code = "exited", os.waitstatus_to_exitcode(wait)
    return status, code, bytes(got[r_out][:MAX_OUTPUT]), bytes(got[r_err][:MAX_OUTPUT])


def main():
    if ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_DUMPABLE) failed")
    resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))
    with open("/forge/jobs.py", encoding="utf-8") as f:
        jobs = eval(f.read(), {"__builtins__": {}})  # string literals and booleans only: forge wrote it
    for i, (program, stdin, as_main) in enumerate(jobs):
        status, code, out, err = run(program, stdin, as_main)
        frame = b"FORGE %d %s %d %d %d\n" % (i, status.encode(), code, len(out), len(err)) + out + err
        while frame:
            frame = frame[os.write(RESULTS, frame):]


main()
