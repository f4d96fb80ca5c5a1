"""One training run per model_dir: a lock file naming the host and pid that holds it; and
the one check of every output folder a program is given (never a user's file).

A second program that would write the same model_dir refuses with one line naming the
first. A lock left behind by a process that died (SIGKILL, a crash, a preempted VM that
kept its disk) on this host is taken over with a warning. On a file system without
exclusive creation (``gs://`` and other remote paths) the check is best effort.
"""

import json
import os
import socket
import time
from typing import Dict, Optional

import tensorflow as tf
from absl import logging

LOCK_NAME = ".simclr_tf.lock"


def output_folder(path: str, flag: str) -> str:
    """Creates the output folder ``path`` (given as ``--flag``) when missing and returns it.
    Raises ValueError, in one line, when it is a file (a user's file is never replaced) or
    cannot be created."""
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
        raise ValueError(f"--{flag}={path!r} is a file; give a folder (it is created when "
                         "missing). The file is left as it is.")
    try:
        tf.io.gfile.makedirs(path)
    except (OSError, tf.errors.OpError) as e:
        raise ValueError(f"--{flag}={path!r} cannot be created or written "
                         f"({type(e).__name__}: {str(e)[:200]}).") from e
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunLock:
    """``with RunLock(model_dir): ...`` holds ``model_dir/.simclr_tf.lock`` for the block."""

    def __init__(self, model_dir: str):
        self.path = os.path.join(model_dir, LOCK_NAME)
        self.local = "://" not in model_dir
        self.info = {"host": socket.gethostname(), "pid": os.getpid(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.held = False

    def _create(self) -> bool:
        payload = json.dumps(self.info)
        if not self.local:
            if tf.io.gfile.exists(self.path):
                return False
            with tf.io.gfile.GFile(self.path, "w") as f:
                f.write(payload)
            return True
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(payload)
        return True

    def _holder(self) -> Optional[Dict]:
        try:
            with tf.io.gfile.GFile(self.path) as f:
                return json.loads(f.read())
        except (tf.errors.NotFoundError, FileNotFoundError):
            return None
        except (ValueError, tf.errors.OpError):
            return {}  # unreadable: written by a process killed while writing it

    def acquire(self) -> "RunLock":
        try:
            return self._acquire()
        except (PermissionError, tf.errors.PermissionDeniedError) as e:
            raise ValueError(f"--model_dir={os.path.dirname(self.path)!r} cannot be written "
                             f"({e}).") from e

    def _acquire(self) -> "RunLock":
        for _ in range(2):
            if self._create():
                self.held = True
                return self
            holder = self._holder()
            if holder is None:
                continue  # released meanwhile
            same_host = holder.get("host") == self.info["host"]
            pid = holder.get("pid")
            if not holder or (same_host and isinstance(pid, int) and not _pid_alive(pid)):
                logging.warning("Taking over %s, left by %s, which is no longer running.",
                                self.path, holder or "an unreadable lock")
                print(f"warning: taking over {self.path}: its process "
                      f"({holder.get('pid', '?')} on {holder.get('host', '?')}) is gone",
                      flush=True)
                tf.io.gfile.remove(self.path)
                continue
            raise ValueError(
                f"model_dir {os.path.dirname(self.path)!r} is in use by another run (pid "
                f"{pid} on host {holder.get('host')}, since {holder.get('started')}); wait "
                f"for it to end or use another --model_dir. If that run is gone, delete "
                f"{self.path}.")
        raise ValueError(f"could not take the lock {self.path}; try again.")

    def release(self):
        if self.held and (self._holder() or {}).get("pid") == self.info["pid"]:
            tf.io.gfile.remove(self.path)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
