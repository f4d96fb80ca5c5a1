"""The run folder: one training run per model_dir (a lock file naming the host and pid that
holds it); the run's settings, ``flags.txt`` (a flagfile that re-runs the same job, read back
as the run's ``Config``); and the one check of every output folder a program is given (never
a user's file).

A second program that would write the same model_dir refuses with one line naming the
first. A lock left behind by a process that died (SIGKILL, a crash, a preempted VM that
kept its disk) on this host is taken over with a warning. On a file system without
exclusive creation (``gs://`` and other remote paths) the check is best effort.
"""

import dataclasses
import json
import os
import socket
import sys
import time
import typing
from typing import Dict, Optional

import tensorflow as tf
from absl import logging

from simclr_tf.core import config as config_lib

LOCK_NAME = ".simclr_tf.lock"


SETTINGS_FILE = "flags.txt"


def write_settings(cfg: config_lib.Config, path: str):
    """Writes ``cfg`` as a flagfile that re-runs the same job (``--name=value`` per field that
    is not None), atomically."""
    lines = [f"# {os.path.basename(sys.argv[0])} resolved flags; re-run with --flagfile=this"]
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        lines.append(f"--{field.name}={value}")
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_settings(path: str) -> config_lib.Config:
    """The ``Config`` a run's flags.txt (``write_settings``) records. Raises ValueError, in
    one line, on a line that is no setting of this version's runs."""
    types = typing.get_type_hints(config_lib.Config)
    values = {}
    with tf.io.gfile.GFile(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, equals, value = line[2:].partition("=")
            if not (line.startswith("--") and equals and name in types):
                raise ValueError(f"{path}, line {number}: {line!r} is not a setting of a run "
                                 "(--name=value, a flag of the programs).")
            values[name] = _typed(value, types[name], f"{path}, line {number}")
    return config_lib.Config(**values)


def _typed(value: str, kind, where: str):
    if kind is bool:
        if value.lower() not in ("true", "false"):
            raise ValueError(f"{where}: {value!r} is not true or false.")
        return value.lower() == "true"
    try:
        return kind(value) if kind in (int, float) else value
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a {kind.__name__}.") from None


def settings_file(checkpoint: str) -> str:
    """RUN/flags.txt for a checkpoint given as RUN, RUN/ckpt-N or RUN/saved_model/N; else
    ""."""
    path = checkpoint.rstrip("/")
    run = path if tf.io.gfile.isdir(path) and not tf.io.gfile.exists(
        os.path.join(path, "saved_model.pb")) else os.path.dirname(path)
    if os.path.basename(run) == "saved_model":  # an export of the run
        run = os.path.dirname(run)
    settings = os.path.join(run, SETTINGS_FILE)
    return settings if run and tf.io.gfile.exists(settings) else ""


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
