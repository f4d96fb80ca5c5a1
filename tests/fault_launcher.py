"""Runs a program of simclr_tf with a fault injected from outside the library, for the crash
tests (the library reads no test switch):

    python tests/fault_launcher.py FAULT simclr_tf.cli.pretrain --flag=value ...

FAULT is ``checkpoint-delay=SECONDS`` (every checkpoint write pauses after its files are
written, before it is recorded as complete, and says so), ``checkpoint-oserror=STEP`` (the
write of ckpt-STEP fails as a full disk would), ``export-delay=SECONDS`` (an export pauses
after its files are written, before it is renamed into place, and says so), or
``report-steps=N`` (no fault: every N-th training step prints ``test: step S done`` on stderr
from inside the loop's tf.function, S the optimizer's step after it, so that a test can wait
for a step inside a loop that prints nothing else until it ends).
"""

import runpy
import sys
import time

import tensorflow as tf

import simclr_tf  # noqa: F401
from simclr_tf.runs import checkpoints


def _checkpoint_fault(kind, value):
    save = checkpoints.RunCheckpointManager.save

    def faulty_save(self, checkpoint_number=None, check_interval=True, options=None):
        number = checkpoint_number
        if number is not None:
            number = int(number.numpy() if hasattr(number, "numpy") else number)

        def inside_the_write(path):  # TF calls it once the files are written
            if kind == "delay":
                print(f"test: inside the write of checkpoint {path}", flush=True)
                time.sleep(float(value))
            elif number == int(value):
                raise OSError(28, "No space left on device (injected by the test)", path)

        options = tf.train.CheckpointOptions(experimental_write_callbacks=[inside_the_write])
        return save(self, checkpoint_number, check_interval, options)

    checkpoints.RunCheckpointManager.save = faulty_save


def _export_delay(seconds):
    save = tf.saved_model.save

    def delayed_save(obj, export_dir, *args, **kwargs):
        result = save(obj, export_dir, *args, **kwargs)
        if "/.tmp-" in str(export_dir):  # an export, written beside its destination
            print(f"test: inside the write of export {export_dir}", flush=True)
            time.sleep(float(seconds))
        return result

    tf.saved_model.save = delayed_save


def _report_steps(every):
    from simclr_tf.training import trainer  # noqa: PLC0415 (only this fault needs it)

    train_step = trainer.Trainer.train_step

    def reporting_step(self, iterator):
        train_step(self, iterator)
        step = self.optimizer.iterations  # read after the update (automatic control deps)
        tf.cond(step % every == 0,
                lambda: tf.print("test: step", step, "done", output_stream=sys.stderr),
                tf.no_op)

    trainer.Trainer.train_step = reporting_step


def main():
    fault, module = sys.argv[1], sys.argv[2]
    what, value = fault.split("=")
    if what == "checkpoint-delay":
        _checkpoint_fault("delay", value)
    elif what == "checkpoint-oserror":
        _checkpoint_fault("oserror", value)
    elif what == "export-delay":
        _export_delay(value)
    elif what == "report-steps":
        _report_steps(int(value))
    else:
        raise SystemExit(f"unknown fault {fault!r}")
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
