"""Which tags of a checkpoint directory are complete: the manifest, the commit, verification, the
choice of a tag to resume from, and pruning.

A save is committed only after every rank has written its files: then `TAG/manifest.json` (every
file of the tag with its size and CRC-32, the layout, the iteration) and last `latest`, each written
under a temporary name, fsynced and renamed. A crash at any moment leaves `latest` naming the previous
complete tag, or a new tag that is complete. Loading verifies the tag against its manifest (ranks
share the reading); a tag without a manifest (written by DeepSpeed or Megatron-DeepSpeed, or by a save
that crashed before its commit) counts as complete when every rank's files are there and readable.
An incomplete or corrupt tag is passed over, with one line saying why, for the newest complete one.
"""

import json
import os
import re
import shutil
import zipfile
import zlib

import torch
import torch.distributed as dist

MANIFEST = "manifest.json"
_STEP_TAG = re.compile(r"global_step(\d+)")
_ZERO_SHARD = re.compile(r"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt")
_MODEL_STATES = re.compile(r"(?:zero_pp_rank_\d+_)?mp_rank_\d+_model_states\.pt|layer_\d+-model_\d+-model_states\.pt")


def write_atomically(path, text):
    """`text` into `path` whole or not at all: a temporary file, fsync, rename, fsync of the folder."""
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def torch_save_atomically(obj, path):
    """torch.save under a temporary name (left out of manifests), then rename: whole or not at all."""
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def crc32(path):
    value = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            value = zlib.crc32(chunk, value)
    return f"{value:08x}"


def tag_files(folder):
    """The files of a tag folder (relative paths), the manifest and temporary files left out."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            if name != MANIFEST and ".tmp" not in name:
                found.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(found)


def write_manifest(folder, iteration, layout, consumed_samples, validation_loss=None):
    files = {name: {"size": os.path.getsize(os.path.join(folder, name)), "crc32": crc32(os.path.join(folder, name))}
             for name in tag_files(folder)}
    record = {"iteration": iteration, "consumed_samples": consumed_samples, "layout": layout, "files": files}
    if validation_loss is not None:
        record["validation_loss"] = validation_loss
    write_atomically(os.path.join(folder, MANIFEST), json.dumps(record, indent=1, sort_keys=True))


def commit(directory, tag, iteration, layout, consumed_samples=0, validation_loss=None):
    """Rank 0, after every rank has written the tag: the manifest (with the validation loss of this
    iteration when it was evaluated), then `latest`."""
    write_manifest(os.path.join(directory, tag), iteration, layout, consumed_samples, validation_loss)
    write_atomically(os.path.join(directory, "latest"), tag)


def read_manifest(folder):
    """A committed tag's manifest, or None (none, or unreadable)."""
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def saved_layout(folder):
    """The layout a committed tag's manifest records, or None (no manifest)."""
    return (read_manifest(folder) or {}).get("layout")


def _problem_of_file(folder, name, expected):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return f"{name} is missing"
    if os.path.getsize(path) != expected["size"]:
        return f"{name} has {os.path.getsize(path)} bytes, the manifest says {expected['size']}"
    if crc32(path) != expected["crc32"]:
        return f"{name} does not match its checksum"
    return None


def _problems_without_manifest(folder, data_parallel_size):
    """A tag from DeepSpeed's own save: some model states, every ZeRO shard of this run's data-parallel
    ranks when there are any, each a readable torch file."""
    names = tag_files(folder)
    states = [n for n in names if _MODEL_STATES.fullmatch(n)]
    if not states:
        return ["no model-states file"]
    problems = []
    shards = {_ZERO_SHARD.fullmatch(n).groups() for n in names if _ZERO_SHARD.fullmatch(n)}
    prefix = next((n.split("zero_pp_rank")[0] for n in names if _ZERO_SHARD.fullmatch(n)), "")
    for tensor_rank in sorted({t for _, t in shards}):
        problems += [f"{prefix}zero_pp_rank_{d}_mp_rank_{tensor_rank}_optim_states.pt is missing"
                     for d in range(data_parallel_size) if (str(d), tensor_rank) not in shards]
    problems += [f"{n} is not a readable torch file" for n in states + [n for n in names if _ZERO_SHARD.fullmatch(n)]
                 if not zipfile.is_zipfile(os.path.join(folder, n))]
    return problems


def verify(directory, tag, data_parallel_size):
    """None if the tag is complete, else what is wrong (one phrase). Collective when torch.distributed
    is initialized: the ranks share the files to check and agree on the answer."""
    folder = os.path.join(directory, tag)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if not os.path.isdir(folder):
        problems = [f"{folder} does not exist"]
    elif os.path.isfile(os.path.join(folder, MANIFEST)):
        try:
            with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
                listed = sorted(json.load(f)["files"].items())
            problems = [p for name, expected in listed[rank::world] if (p := _problem_of_file(folder, name, expected))]
        except (ValueError, KeyError) as error:
            problems = [f"{MANIFEST} is unreadable ({error})"]
    else:
        problems = _problems_without_manifest(folder, data_parallel_size) if rank == 0 else []
    if dist.is_initialized():
        gathered = [None] * world
        dist.all_gather_object(gathered, problems)
        problems = [p for ranks_problems in gathered for p in ranks_problems]
    return "; ".join(sorted(problems)[:3]) or None


class NoCompleteTag(ValueError):
    pass


def choose_tag(directory, asked, data_parallel_size):
    """(the tag to read, [why newer tags were passed over]): `asked` when given and complete; else the
    tag `latest` names, else the newest complete tag before it; (None, []) without a `latest` file.
    Raises NoCompleteTag (one line) when no candidate is complete. Collective like verify."""
    if asked:
        problem = verify(directory, asked, data_parallel_size)
        if problem:
            raise NoCompleteTag(f"checkpoint {asked} cannot be loaded: {problem}")
        return asked, []
    latest = read_latest(directory)
    if latest is None:
        return None, []
    newest = step_of(latest)
    candidates = [latest] + [t for t in tags_newest_first(directory) if t != latest and (
        newest is None or (step_of(t) is not None and step_of(t) < newest))]
    passed_over = []
    for tag in candidates:
        problem = verify(directory, tag, data_parallel_size)
        if problem is None:
            return tag, passed_over
        passed_over.append(f"checkpoint {tag} is incomplete ({problem})")
    raise NoCompleteTag(f"no complete checkpoint: {'; '.join(passed_over)}")


def step_of(tag):
    match = _STEP_TAG.fullmatch(tag)
    return int(match.group(1)) if match else None


def tags_newest_first(directory):
    """The tag folders of a checkpoint directory, global_stepN by N, newest first (others after)."""
    tags = [name for name in os.listdir(directory) if os.path.isdir(os.path.join(directory, name))]
    return sorted(tags, key=lambda t: (step_of(t) is not None, step_of(t) or 0, t), reverse=True)


def read_latest(directory):
    """The tag `latest` names, or None."""
    path = os.path.join(directory, "latest")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


BEST = "best"  # the file naming the committed tag with the lowest validation loss (--load-tag best)


def best_tags(directory, count):
    """The `count` committed global_stepN tags with the lowest validation loss in their manifests."""
    losses = []
    for tag in tags_newest_first(directory):
        manifest = read_manifest(os.path.join(directory, tag)) if step_of(tag) is not None else None
        if manifest and manifest.get("validation_loss") is not None:
            losses.append((manifest["validation_loss"], -step_of(tag), tag))
    return [tag for _, _, tag in sorted(losses)[:count]]


def named_tag(directory, tag):
    """`tag`, or for "best" the tag the `best` file names (None when there is none)."""
    if tag != BEST:
        return tag
    path = os.path.join(directory, BEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def prune(directory, keep, protected, best=0):
    """Delete committed global_stepN tags beyond the newest `keep` and the `best` with the lowest
    validation loss (whose first the `best` file names, written before anything is deleted), never one in
    `protected`. A tag is renamed out of the way before it is deleted: a crash mid-deletion leaves no
    half tag under a tag's name."""
    committed = [t for t in tags_newest_first(directory)
                 if step_of(t) is not None and os.path.isfile(os.path.join(directory, t, MANIFEST))]
    kept = set(committed[:keep]) | set(protected)
    if best:
        lowest = best_tags(directory, best)
        kept |= set(lowest)
        if lowest:
            write_atomically(os.path.join(directory, BEST), lowest[0])
    for tag in committed:
        if tag not in kept:
            os.replace(os.path.join(directory, tag), os.path.join(directory, f".{tag}.deleting"))
    for name in os.listdir(directory):  # these, and any a crash left
        if name.endswith(".deleting"):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
