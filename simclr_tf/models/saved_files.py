"""Saved files checked before they are read, so that a missing, foreign or damaged one stops
with one line naming it: what a path holds (``describe``), whether a checkpoint's files are
whole (``check_bundle``: each data file as long as its index says), and whether a folder is an
export of this project (``export_outputs``: its root objects and its signature's endpoints).

A checkpoint (a training checkpoint ``ckpt-N``, or a SavedModel's ``variables/variables``) is
an index file (``PREFIX.index``: a table mapping each tensor to its data file, offset and
size) and its data files (``PREFIX.data-0000K-of-0000N``). The index is read here without
TensorFlow's reader, which would only fail later, at the first tensor past a file's end
(``IndexError: Read less bytes than requested``).
"""

import contextlib
import os
import struct
from typing import Dict, Iterator, List, Optional, Tuple

import tensorflow as tf

from simclr_tf.core import endpoints as ep

# What an export's serving signature returns, whatever the model: the pooled features and
# the projection head's ends (the encoder's endpoints follow from its kind).
EXPORT_OUTPUTS = (ep.FINAL_AVG_POOL, ep.PROJ_HEAD_INPUT, ep.PROJ_HEAD_OUTPUT)
EXPORT_ROOT = ("model", "serve")  # the root objects of runs.export's SavedModel
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48


class DamagedFileError(ValueError):
    """A saved file is missing, cut short or garbled (not: of another kind or program)."""


class _Compressed(Exception):
    """A table block in a compressed form (TensorFlow writes checkpoint indexes without)."""


def _size(path: str) -> int:
    return tf.io.gfile.stat(path).length


def describe(path: str) -> str:
    """What is at ``path``, in a few words: missing, a file (text: its first characters, or
    binary, with its size) or a folder (empty, or a few of its entries)."""
    if not tf.io.gfile.exists(path):
        return "missing"
    if tf.io.gfile.isdir(path):
        entries = sorted(e.rstrip("/") for e in tf.io.gfile.listdir(path))
        if not entries:
            return "an empty folder"
        shown = ", ".join(repr(e) for e in entries[:3]) + (", ..." if len(entries) > 3 else "")
        return f"a folder of {len(entries)} entries ({shown})"
    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(200)
    size = _size(path)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        return f"a binary file of {size:,} bytes"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"a text file of {size:,} bytes" + (f" starting {first!r}" if first else "")


def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _block(data: bytes, offset: int, size: int) -> Iterator[Tuple[bytes, bytes]]:
    """The (key, value) entries of an uncompressed table block (LevelDB's format: prefix-
    compressed keys, then the restart offsets and their count)."""
    if data[offset + size] != 0:  # the trailer's type byte: 0 is no compression
        raise _Compressed()
    block = data[offset:offset + size]
    (restarts,) = struct.unpack("<I", block[-4:])
    end, pos, key = len(block) - 4 * (restarts + 1), 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        fresh, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + fresh]
        pos += fresh
        yield key, block[pos:pos + length]
        pos += length


def needed_lengths(index_path: str) -> Dict[int, int]:
    """{data file number: the bytes its tensors reach} from a checkpoint's index file ({}
    when its blocks are compressed, which this reader does not decode).

    Raises:
      ValueError: the index is not a checkpoint index, or cannot be parsed.
    """
    from tensorflow.core.protobuf import tensor_bundle_pb2  # noqa: PLC0415

    with tf.io.gfile.GFile(index_path, "rb") as f:
        data = f.read()
    try:
        if len(data) < _FOOTER or struct.unpack("<Q", data[-8:])[0] != _TABLE_MAGIC:
            raise ValueError("no table footer")
        _, pos = _varint(data, len(data) - _FOOTER)  # the meta-index handle: unused
        _, pos = _varint(data, pos)
        index_offset, pos = _varint(data, pos)
        index_size, _ = _varint(data, pos)
        needed: Dict[int, int] = {}
        for _, handle in _block(data, index_offset, index_size):
            offset, pos = _varint(handle, 0)
            size, _ = _varint(handle, pos)
            for key, value in _block(data, offset, size):
                if not key:  # the header
                    continue
                entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
                end = entry.offset + entry.size
                needed[entry.shard_id] = max(needed.get(entry.shard_id, 0), end)
        return needed
    except _Compressed:
        return {}
    except (IndexError, struct.error, ValueError) as e:
        raise ValueError(f"{index_path} is not a checkpoint index that can be read ({e})") \
            from None


def data_files(prefix: str) -> List[str]:
    """The data files a checkpoint's index names (``PREFIX.data-0000K-of-0000N``)."""
    pattern = tf.io.gfile.glob(f"{prefix}.data-*-of-*")
    count = int(pattern[0].rsplit("-of-", 1)[1]) if pattern else 1
    return [f"{prefix}.data-{k:05d}-of-{count:05d}" for k in range(count)]


def check_bundle(prefix: str, what: str):
    """Raises ValueError, in one line naming the file, when a file of the checkpoint at
    ``prefix`` (``what`` says whose) is missing or shorter than its index says."""
    index = prefix + ".index"
    if not tf.io.gfile.exists(index):
        raise DamagedFileError(f"{what}: {index} is missing (the checkpoint is incomplete).")
    files = data_files(prefix)
    try:
        needed = needed_lengths(index)
    except ValueError as e:
        raise DamagedFileError(f"{what}: {e}; it is damaged.") from None
    for shard, length in sorted(needed.items()):
        path = files[shard] if shard < len(files) else f"{prefix}.data-{shard:05d}-of-?"
        if not tf.io.gfile.exists(path):
            raise DamagedFileError(f"{what}: {path} is missing (the checkpoint is "
                                   "incomplete).")
        size = _size(path)
        if size < length:
            raise DamagedFileError(
                f"{what}: {path} is cut short: {size:,} bytes where its index needs "
                f"{length:,} (cut off while written or copied); copy it again or use another.")


# What TensorFlow raises on a file cut short, garbled (a checksum: an OpError of code
# UNKNOWN), missing or not decoded; but InvalidArgumentError is another architecture's
# checkpoint, left to the caller.
_DAMAGED = (tf.errors.OpError, IndexError, EOFError, OSError, UnicodeDecodeError)


@contextlib.contextmanager
def reading(path: str, what: str):
    """Turns any failure of reading the saved files at ``path`` (``what`` says whose) into one
    line: a damaged file that its sizes did not show (garbled bytes fail their checksum)."""
    try:
        yield
    except tf.errors.InvalidArgumentError:
        raise
    except _DAMAGED as e:
        detail = (getattr(e, "message", None) or str(e)).strip().splitlines()
        raise DamagedFileError(f"{what}: {path} cannot be read ({type(e).__name__}: "
                               f"{detail[0][:200] if detail else ''}); its files are "
                               "damaged.") from None


def savedmodel_graph(path: str):
    """The first meta graph of the SavedModel at ``path`` (its object graph and signatures);
    ValueError naming ``saved_model.pb`` when it cannot be read."""
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: PLC0415

    proto = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        return proto.meta_graphs[0]
    except Exception as e:  # noqa: BLE001 (any parse failure is the same bad file)
        raise ValueError(f"{path}/saved_model.pb cannot be read ({type(e).__name__})") \
            from None


def export_outputs(path: str, flag: str = "") -> Dict[str, List[int]]:
    """The endpoints (name: shape, -1 for any size) that the export at ``path`` returns,
    after checking that it is one of this project's and that its files are whole.

    Raises:
      ValueError: in one line naming ``flag=path`` and what it holds instead.
    """
    named = f"{flag}={path!r}" if flag else repr(path)
    wanted = ("give an export of simclr_tf: a folder with saved_model.pb, such as "
              "RUN/saved_model/<step>")
    if not tf.io.gfile.exists(path):
        raise ValueError(f"{named} does not exist; {wanted}.")
    if not tf.io.gfile.isdir(path):
        raise ValueError(f"{named} is {describe(path)}; {wanted}.")
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        hint = (f" (a run's folder: its exports are in {os.path.join(path, 'saved_model')})"
                if tf.io.gfile.isdir(os.path.join(path, "saved_model")) else "")
        raise ValueError(f"{named} holds no saved_model.pb: it is {describe(path)}{hint}; "
                         f"{wanted}.")
    try:
        graph = savedmodel_graph(path)
    except ValueError as e:
        raise ValueError(f"{named}: {e}; it is damaged or not a SavedModel.") from None
    root = sorted(c.local_name for c in graph.object_graph_def.nodes[0].children)
    signature = graph.signature_def.get("serving_default")
    outputs = ({k: [d.size for d in v.tensor_shape.dim] for k, v in signature.outputs.items()}
               if signature is not None else {})
    if not set(EXPORT_ROOT) <= set(root) or not set(EXPORT_OUTPUTS) <= set(outputs):
        returns = ", ".join(sorted(outputs)) or "nothing (no serving_default signature)"
        raise ValueError(
            f"{named} is a SavedModel of another program, not an export of simclr_tf: its "
            f"root holds {', '.join(root) or 'no objects'} and its serving_default returns "
            f"{returns} (an export returns {', '.join(EXPORT_OUTPUTS)}, ...).")
    check_bundle(os.path.join(path, "variables", "variables"), named)
    return outputs


def num_classes(outputs: Dict[str, List[int]]) -> Optional[int]:
    """The supervised head's class count of an export's ``export_outputs``, None without."""
    shape = outputs.get(ep.LOGITS_SUP)
    return int(shape[-1]) if shape else None
