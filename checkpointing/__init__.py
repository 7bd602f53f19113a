"""Checkpoints in one place: saving and resuming a training run (resume.py), which tags are complete
and how they are committed, chosen and pruned (tags.py), reading or writing checkpoint files without
an engine, for converters, evaluation and generation (files.py), and resuming at another parallel
layout: every parameter's full training state read from DeepSpeed's files at any layout
(native_states.py) and the layout-free form written and handed to any engine (universal.py)."""

from .files import read_checkpoint, read_shard, write_checkpoint
from .resume import load_checkpoint, save_checkpoint

__all__ = ["load_checkpoint", "read_checkpoint", "read_shard", "save_checkpoint", "write_checkpoint"]
