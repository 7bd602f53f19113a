"""Checkpoints in one place: saving and resuming a training run (resume.py), which tags are complete
and how they are committed, chosen and pruned (tags.py), and reading or writing checkpoint files
without an engine, for converters, evaluation and generation (files.py)."""

from .files import read_checkpoint, read_shard, write_checkpoint
from .resume import load_checkpoint, save_checkpoint

__all__ = ["load_checkpoint", "read_checkpoint", "read_shard", "save_checkpoint", "write_checkpoint"]
