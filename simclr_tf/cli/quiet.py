"""Keeps TensorFlow's native log noise off a CPU user's console.

TF 2.20 writes some C++ log lines straight to the process's stderr, whatever
``TF_CPP_MIN_LOG_LEVEL`` says: ``failed call to cuInit`` on a machine without a GPU driver,
``Compiled cluster using XLA!`` with absl's "before absl::InitializeLog()" banner, and
libjpeg's complaint about each broken JPEG, at every epoch (the folder source names the
broken files itself, once), and grappler's two lines each time the benchmark counts FLOPs. The
programs route file descriptor 2 through a pipe whose reader drops exactly those lines and
passes everything else on at once (``--verbosity`` given: nothing is filtered).
"""

import atexit
import os
import re
import sys
import threading

NOISE = re.compile(rb"failed call to cuInit|Compiled cluster using XLA|"
                   rb"All log messages before absl::InitializeLog\(\) is called|"
                   rb"^Input file read error$|^Premature end of JPEG file$|"
                   rb"^Improper call to JPEG library in state \d+$|"
                   rb"devices\.cc:\d+\] Number of eligible GPUs|"
                   rb"single_machine\.cc:\d+\] Starting new session")


def _forward(read_fd: int, real_fd: int):
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = [line + b"\n" for line in lines if not NOISE.search(line)]
        if kept:
            os.write(real_fd, b"".join(kept))
    if pending and not NOISE.search(pending):
        os.write(real_fd, pending)
    os.close(read_fd)


def filter_native_stderr():
    """Drops the ``NOISE`` lines from everything written to fd 2 from now on, until exit."""
    sys.stderr.flush()
    real_fd = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    reader = threading.Thread(target=_forward, args=(read_fd, real_fd), daemon=True)
    reader.start()

    def restore():  # the pipe's last writer closes: the reader drains it and stops
        sys.stderr.flush()
        os.dup2(real_fd, 2)
        reader.join(timeout=5)

    atexit.register(restore)
