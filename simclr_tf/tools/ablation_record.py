"""A study's first settings, kept in ``DIR/study.json``: a resumed study runs with them or
not at all. (Its finished cells are known only by their summary.json, so a study resumed with
other flags would finish its missing cells with those, beside the finished ones, under one
label in the table.)

The settings are the study's name, every field of the run's ``Config`` but the folder, the
linear evaluation's and ``--budget_minutes``. They are kept once the study's length is fixed:
at its start, or after the probe of a budget (a budget refused as too short keeps nothing, so
the study can start again with more minutes).
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional

from simclr_tf.core import config as config_lib

STUDY_FILE = "study.json"
# Where the study lives, not what it computes (a study folder may be moved).
_PLACES = ("model_dir",)


def settings(study_name: str, cfg: config_lib.Config, linear,
             budget_minutes: Optional[float]) -> Dict:
    """The settings that make the study's cells comparable, by flag name, as JSON values."""
    record = {"study": study_name, "budget_minutes": budget_minutes or 0.0,
              "linear_eval_steps": linear.steps,
              "linear_eval_learning_rate": linear.learning_rate,
              "linear_eval_batch_size": linear.batch_size}
    for field in dataclasses.fields(cfg):
        if field.name not in _PLACES:
            record[field.name] = getattr(cfg, field.name)
    return json.loads(json.dumps(record))  # as read back: tuples become lists


def _flag(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}={'true' if value else 'false'}"
    return f"--{name}" + ("=" if value is None else f"={value}")


def differences(kept: Dict, record: Dict) -> List[str]:
    """Each setting that differs, as "--flag=KEPT (then), --flag=NOW (now)"."""
    names = [k for k in record if k in kept and kept[k] != record[k]]
    names += [k for k in record if k not in kept] + [k for k in kept if k not in record]
    return [f"{_flag(k, kept.get(k))} then, {_flag(k, record.get(k))} now" for k in names]


def check(root: str, record: Dict):
    """Raises ValueError, in one line, when ``root`` holds a study begun with other settings
    than ``record``: it names each flag that differs and both values."""
    path = os.path.join(root, STUDY_FILE)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            kept = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} cannot be read ({type(e).__name__}): it keeps the study's "
                         "first settings; restore it, or give another --model_dir.") from None
    changed = differences(kept, record)
    if changed:
        shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3
                                          else "")
        raise ValueError(
            f"--model_dir={root!r} holds --study={kept.get('study')} begun with other flags "
            f"({shown}): a resumed study keeps its first flags ({path}), so that its cells "
            "compare; run it with those, or give another --model_dir.")


def keep(root: str, record: Dict):
    """Writes ``record`` as the study's settings (once: a kept file is never replaced)."""
    path = os.path.join(root, STUDY_FILE)
    if os.path.exists(path):
        return
    os.makedirs(root, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
