"""The demo behind ``make demo``: SimCLR beats a random encoder on the built-in dataset.

  python -m simclr_tf.demo --flagfile=flags/demo.flags --model_dir=demo_runs

Three runs of the library's own programs, in ``model_dir/{pretrain,linear_eval,random_init}``:
contrastive pretraining on the built-in ``shapes`` set (no labels used by the encoder), then
the paper's linear evaluation (frozen encoder, batch norm in inference mode, a linear head
trained on crop + flip) of that encoder and of the same architecture at random
initialisation. It ends with one line:

  demo: pretrained top-1 = 0.xxx, random-init top-1 = 0.yyy

Every run resumes from its checkpoints, so an interrupted demo continues where it stopped.
"""

import dataclasses
import os
import time

from absl import flags

from simclr_tf.cli import flags as cli_flags

cli_flags.define_flags(train_mode="pretrain")
LINEAR_STEPS = flags.DEFINE_integer(
    "linear_eval_steps", 200, "Training steps of each linear evaluation.")
LINEAR_LR = flags.DEFINE_float(
    "linear_eval_learning_rate", 0.2, "Base learning rate of the linear evaluations "
    "(Nesterov momentum, linear scaling, no warm-up, no weight decay).")
LINEAR_BATCH = flags.DEFINE_integer(
    "linear_eval_batch_size", 256, "Global batch of the linear evaluations.")


def linear_eval_config(pretrain: "cli_flags.config_lib.Config", model_dir: str,
                       checkpoint, steps: int, learning_rate: float, batch_size: int):
    """The linear-evaluation run for a pretraining config (the paper's protocol)."""
    return dataclasses.replace(
        pretrain, train_mode="finetune", model_dir=model_dir, checkpoint=checkpoint,
        linear_eval=True, fine_tune_after_block=4, zero_init_logits_layer=True,
        optimizer="momentum", learning_rate=learning_rate, learning_rate_scaling="linear",
        weight_decay=0.0, warmup_epochs=0, train_steps=steps, train_batch_size=batch_size,
        checkpoint_steps=steps, steps_per_loop=0, global_bn=False,
        lineareval_while_pretraining=False, keep_hub_module_max=0)


def main(cfg, explicit):
    del explicit
    from simclr_tf import train  # late: keep flag errors fast

    start = time.time()
    root = cfg.model_dir
    pre = dataclasses.replace(cfg, model_dir=os.path.join(root, "pretrain"))
    pre.validate()
    os.makedirs(pre.model_dir, exist_ok=True)
    cli_flags.write_flagfile(pre, os.path.join(pre.model_dir, "flags.txt"))
    print(f"demo 1/3: pretraining into {pre.model_dir}", flush=True)
    train.run(pre)
    results = {}
    for name, checkpoint in (("linear_eval", pre.model_dir), ("random_init", None)):
        lin = linear_eval_config(pre, os.path.join(root, name), checkpoint,
                                 LINEAR_STEPS.value, LINEAR_LR.value, LINEAR_BATCH.value)
        what = "the pretrained" if checkpoint else "a randomly initialised"
        print(f"demo {2 if checkpoint else 3}/3: linear evaluation of {what} encoder into "
              f"{lin.model_dir}", flush=True)
        os.makedirs(lin.model_dir, exist_ok=True)
        cli_flags.write_flagfile(lin, os.path.join(lin.model_dir, "flags.txt"))
        results[name] = train.run(lin)["top1"]
    minutes = (time.time() - start) / 60
    print(f"demo finished in {minutes:.1f} min (results in {root})", flush=True)
    print(f"demo: pretrained top-1 = {results['linear_eval']:.3f}, "
          f"random-init top-1 = {results['random_init']:.3f}", flush=True)


def run():
    cli_flags.run_program(main, "simclr-demo", __doc__,
                          extra=("linear_eval_steps", "linear_eval_learning_rate",
                                 "linear_eval_batch_size"))


if __name__ == "__main__":
    run()
