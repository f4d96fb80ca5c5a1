"""The demo behind ``make demo`` (``simclr_tf.cli.demo``): SimCLR beats a random encoder.

Three runs of the library, in ``model_dir/{pretrain,linear_eval,random_init}``: contrastive
pretraining on the built-in ``shapes`` set (no labels used by the encoder; its pictures, as
``simclr-visualize`` draws them, in ``model_dir/pictures``), then the paper's
linear evaluation (frozen encoder, batch norm in inference mode, a linear head trained on crop
+ flip) of that encoder and of the same architecture at random initialisation. Every run
resumes from its checkpoints, so an interrupted demo continues where it stopped.
"""

import dataclasses
import os
import time
from typing import Callable, Dict, Optional

from simclr_tf.core import config as config_lib
from simclr_tf.training import train


def linear_eval_config(pretrain: config_lib.Config, model_dir: str,
                       checkpoint, steps: int, learning_rate: float, batch_size: int):
    """The linear-evaluation run for a pretraining config (the paper's protocol)."""
    return dataclasses.replace(
        pretrain, train_mode="finetune", model_dir=model_dir, checkpoint=checkpoint,
        linear_eval=True, fine_tune_after_block=4, zero_init_logits_layer=True,
        optimizer="momentum", learning_rate=learning_rate, learning_rate_scaling="linear",
        weight_decay=0.0, warmup_epochs=0, train_steps=steps, train_batch_size=batch_size,
        checkpoint_steps=steps, steps_per_loop=0, global_bn=False,
        lineareval_while_pretraining=False, keep_hub_module_max=0)


def run(cfg: config_lib.Config, linear_steps: int, linear_learning_rate: float,
        linear_batch_size: int,
        before_run: Optional[Callable[[config_lib.Config], None]] = None) -> Dict[str, float]:
    """Pretrains with ``cfg`` into ``cfg.model_dir/pretrain``, then linear-evaluates that
    encoder and a randomly initialised one; returns their top-1 by run name.

    ``before_run(run_cfg)`` is called once the folder of each run exists, before it trains
    (the program writes the run's flags.txt there). Prints one progress line per run and
    the result line ``demo: pretrained top-1 = ..., random-init top-1 = ...``.
    """
    start = time.time()
    root = cfg.model_dir
    pre = dataclasses.replace(cfg, model_dir=os.path.join(root, "pretrain")).validate()
    prepare(pre, before_run)
    print(f"demo 1/3: pretraining into {pre.model_dir}", flush=True)
    kept = {}
    train.run(pre, on_end=lambda model: kept.update(model=model))
    drawn = draw(pre, kept["model"], os.path.join(root, "pictures"))
    results = {}
    for name, checkpoint in (("linear_eval", pre.model_dir), ("random_init", None)):
        lin = linear_eval_config(pre, os.path.join(root, name), checkpoint, linear_steps,
                                 linear_learning_rate, linear_batch_size)
        what = "the pretrained" if checkpoint else "a randomly initialised"
        print(f"demo {2 if checkpoint else 3}/3: linear evaluation of {what} encoder into "
              f"{lin.model_dir}", flush=True)
        prepare(lin, before_run)
        results[name] = train.run(lin)["top1"]
    minutes = (time.time() - start) / 60
    print(f"demo finished in {minutes:.1f} min (results in {root})", flush=True)
    print(f"demo: pretrained top-1 = {results['linear_eval']:.3f}, "
          f"random-init top-1 = {results['random_init']:.3f}; pictures in "
          f"{os.path.dirname(drawn[0])}: {' '.join(os.path.basename(p) for p in drawn)}",
          flush=True)
    return results


def draw(pre: config_lib.Config, model, output_dir: str):
    """simclr-visualize's pictures of the pretraining run into ``output_dir``."""
    from simclr_tf.data import pipeline as data_lib  # noqa: PLC0415
    from simclr_tf.tools import visualize  # noqa: PLC0415

    source = data_lib.get_source(pre.dataset, pre.data_dir, seed=pre.seed)
    return visualize.draw(output_dir, pre, source, visualize.model_features(model),
                          pre.model_dir, visualize.Options(), "the pretrained encoder")


def prepare(run_cfg: config_lib.Config, before_run):
    """Creates the run's folder and calls ``before_run(run_cfg)`` (the program writes the
    run's flags.txt there)."""
    os.makedirs(run_cfg.model_dir, exist_ok=True)
    if before_run:
        before_run(run_cfg)
