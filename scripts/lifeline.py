#!/usr/bin/env python3
"""Run a command and kill it when our stdin closes.

The integration tests start long-lived servers (shared by all tests of one
test binary) that no destructor ever stops. The test process holds the write
end of this wrapper's stdin; when that process ends for any reason (success,
panic, SIGKILL, Ctrl-C), the pipe closes, we read EOF and stop the command.
With --cleanup DIR, DIR (the server's throw-away state) is then removed too;
it is kept when the command ends by itself, so its logs can explain why.

Usage: lifeline.py [--pidfile FILE] [--cleanup DIR] -- COMMAND [ARG...]
Exits with the command's status (128+N when killed by signal N).
"""

import os
import shutil
import signal
import subprocess
import sys
import threading

USAGE = "usage: lifeline.py [--pidfile FILE] [--cleanup DIR] -- COMMAND [ARG...]"


def main() -> int:
    argv = sys.argv[1:]
    pidfile = None
    cleanup = None
    while len(argv) >= 2 and argv[0] in ("--pidfile", "--cleanup"):
        if argv[0] == "--pidfile":
            pidfile = argv[1]
        else:
            cleanup = argv[1]
        argv = argv[2:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(USAGE, file=sys.stderr)
        return 64
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    if pidfile:
        tmp = pidfile + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(child.pid))
        os.rename(tmp, pidfile)

    orphaned = threading.Event()

    def watch_stdin() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        orphaned.set()
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if cleanup:
            shutil.rmtree(cleanup, ignore_errors=True)

    watcher = threading.Thread(target=watch_stdin, daemon=True)
    watcher.start()
    # SIGTERM to the wrapper reaches the command too (the harness signals the
    # whole process group; this covers a signal sent to the wrapper alone).
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    code = child.wait()
    if orphaned.is_set():
        watcher.join(timeout=10)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: the stdin watcher may still be blocked in read(); a normal
    # interpreter shutdown would wait on it.
    os._exit(status)
