"""What a training run reads: its source (label subset applied), its step plan and the
training input as the strategy distributes it (the evaluators build their own inputs:
``evaluation.running.Run``)."""

import dataclasses
from typing import Dict, Optional

import tensorflow as tf

from simclr_tf.core import config as config_lib
from simclr_tf.core import step_plan
from simclr_tf.data import folder, label_subsets, sources
from simclr_tf.data import pipeline as data_lib
from simclr_tf.training import losses


@dataclasses.dataclass
class Inputs:
    """What the run reads: its source (label subset applied), step counts and datasets."""

    source: sources.Source
    plan: step_plan.StepPlan
    train_ds: tf.distribute.DistributedDataset
    label_counts: Dict  # labelled examples per class; {} when every one is used
    with_head: bool = False  # the model has a supervised head (probe or fine-tuning)


def build_inputs(cfg: config_lib.Config, strategy: tf.distribute.Strategy,
                 source: Optional[sources.Source] = None) -> Inputs:
    """What a run of ``cfg`` reads: its training source (``source`` or ``cfg.dataset``, label
    subset applied), its step plan and the training input (each replica's share, as
    ``strategy`` distributes it)."""
    source, with_head, label_counts = training_source(cfg, source)
    plan = step_plan.plan_steps(cfg, source.num_examples(cfg.train_split))
    mode = "pretrain" if cfg.train_mode == "pretrain" else "finetune"
    train_ds = strategy.distribute_datasets_from_function(
        lambda ctx: data_lib.build_dataset(
            source, cfg.train_split, mode, cfg.train_batch_size, cfg.image_size, ctx,
            cache=cfg.cache_dataset, seed=cfg.seed, **data_lib.view_settings(cfg)))
    return Inputs(source, plan, train_ds, label_counts, with_head)


def training_source(cfg: config_lib.Config, source: Optional[sources.Source] = None):
    """The source of a run with its label subset applied; whether the model gets a
    supervised head; and the labelled examples used per class ({} for all of them).

    Pretraining on unlabelled images turns the linear probe off (with a notice); what needs
    labels otherwise (fine-tuning, distillation's label loss) stops with one line naming what
    to give. Distilling keeps every image and hides the labels outside the subset."""
    source = source or data_lib.get_source(cfg.dataset, cfg.data_dir, seed=cfg.seed,
                                           folder_labels=cfg.folder_labels)
    source.check_split(cfg.train_split)
    with_head = cfg.train_mode != "pretrain" or cfg.lineareval_while_pretraining
    if cfg.train_mode == "pretrain" and losses.needs_labels(cfg.loss):
        sources.require_labels(source, f"--loss={cfg.loss} (its positives are the images of "
                               "a class)")
    if cfg.train_mode == "finetune":
        sources.require_labels(source, f"{cfg.train_mode} (simclr-finetune)")
    elif cfg.train_mode == "distill" and cfg.distill_weight < 1:
        sources.require_labels(source, f"--distill_weight={cfg.distill_weight} (the labels' "
                               "loss)")
    elif cfg.train_mode == "pretrain" and not source.classifiable and (
            with_head or cfg.knn_monitor):
        what = ("have no labels (no class sub-folders)" if not source.labelled else
                f"are of one class ({source.class_names[0]!r}), nothing to tell apart")
        print(f"{cfg.dataset}: the images in {cfg.data_dir} {what}: pretraining without "
              "the linear probe and the kNN monitor. Linear-evaluate the result with "
              "simclr-finetune --linear_eval --checkpoint=MODEL_DIR on a folder of two or "
              "more classes.", flush=True)
        with_head = False
    if with_head and source.labelled:
        source.check_split(cfg.eval_split)
    distilling = cfg.train_mode == "distill"
    source, counts = label_subsets.apply(source, cfg.train_split, cfg.label_subset(),
                                         mask=distilling)
    if counts:
        print(f"{cfg.train_mode}: {sum(counts.values())} labelled examples of "
              f"{len(counts)} classes ({min(counts.values())}-{max(counts.values())} per "
              "class)" + (", every image distilled" if distilling else ""), flush=True)
    return source, with_head, counts


def data_facts(cfg: config_lib.Config, inputs: Inputs) -> Dict:
    """The summary's facts about the data: the label subset used, the files skipped."""
    facts = {}
    if inputs.label_counts:
        facts["train_examples"] = sum(inputs.label_counts.values())
        facts["train_examples_per_class"] = inputs.label_counts
    skipped = getattr(inputs.source, "skipped", 0)
    if skipped:
        facts["skipped_files"] = skipped
        print(f"skipped {skipped} broken image file(s) in {cfg.data_dir} (the first "
              f"{min(skipped, folder.MAX_NAMED_SKIPS)} named above)", flush=True)
    return facts
