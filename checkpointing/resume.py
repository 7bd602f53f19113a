"""Checkpoints of a training run: save and resume through the DeepSpeed engine.

A tag folder holds what engine.save_checkpoint writes (model, optimizer and scheduler states; the
iteration, consumed samples and flags as client state) and one file of random-number states per rank,
`rng_state_tpTT_ppPP_dpDDD.pt`: every rank draws dropout from streams of its own (pipeline stages and
tensor ranks differ), so each rank restores its own and a resumed run draws the masks an unbroken run
draws. A save is committed (manifest, then `latest`) only when every rank has written; a resume picks
the newest complete tag (tags.py).
"""

import os
import time

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LambdaLR

import mpu
from initialize import UsageError, print_rank_0, rng_state, set_rng_state
from learning_rates import continue_schedule, settings_from_checkpoint

from . import tags
from .files import checkpoint_layout

DATA_FLAGS = {"data_path": "--data-path", "train_data": "--train-data"}


def _rng_file(folder):
    return os.path.join(folder, f"rng_state_tp{mpu.get_model_parallel_rank():02d}_"
                                f"pp{mpu.get_pipeline_model_parallel_rank():02d}_"
                                f"dp{mpu.get_data_parallel_rank():03d}.pt")


def _tag_to_load(args):
    """The complete tag to resume from: --load-tag/--ckpt-step, else the one `latest` names, else the
    newest complete one before it (saying why); None when the directory holds no committed checkpoint."""
    data_parallel = mpu.get_data_parallel_world_size()
    asked = args.load_tag or (None if args.ckpt_step is None else f"global_step{args.ckpt_step}")
    if asked:
        problem = tags.verify(args.load, asked, data_parallel)
        if problem:
            raise UsageError(f"--load {args.load}: checkpoint {asked} cannot be loaded: {problem}")
        return asked
    latest = tags.read_latest(args.load)
    if latest is None:
        if os.path.isdir(args.load) and os.listdir(args.load) and not any(
                tags.step_of(t) is not None for t in os.listdir(args.load)):
            raise UsageError(f"--load {args.load} is not a checkpoint directory (no 'latest' file, no global_step "
                             "folders, but other files): point --load at a folder written by --save, or at an empty or "
                             "new folder to start afresh")
        return None
    newest = tags.step_of(latest)
    candidates = [latest] + [t for t in tags.tags_newest_first(args.load) if t != latest and (
        newest is None or (tags.step_of(t) is not None and tags.step_of(t) < newest))]
    passed_over = []
    for tag in candidates:
        problem = tags.verify(args.load, tag, data_parallel)
        if problem is None:
            if passed_over:
                print_rank_0(f"warning: --load {args.load}: {passed_over[0]}; resuming from {tag}, the newest "
                             "complete checkpoint")
            return tag
        passed_over.append(f"checkpoint {tag} is incomplete ({problem})")
    raise UsageError(f"--load {args.load}: no complete checkpoint: {'; '.join(passed_over)}. Pick one with "
                     "--load-tag, or start afresh in another --save folder")


def _restore_rng(folder):
    path = _rng_file(folder)
    if os.path.isfile(path):
        set_rng_state(torch.load(path, map_location="cpu", weights_only=True))
    else:
        print_rank_0(f"warning: {folder} holds no random-number states; dropout continues from --seed")


def _warn_about_other_data(args, saved_args):
    for name, flag in DATA_FLAGS.items():
        if name in saved_args and saved_args[name] != getattr(args, name):
            print_rank_0(f"warning: --load {args.load}: the checkpoint was trained with {flag} {saved_args[name]} "
                         f"but this run reads {flag} {getattr(args, name)}; training continues at the checkpoint's "
                         "data position in the new data")


def load_checkpoint(engine, args):
    """Resume from args.load; returns (iteration, consumed samples, tag or None)."""
    tag = _tag_to_load(args)
    if tag is None:
        print_rank_0(f"warning: no checkpoint in --load {args.load} (no 'latest' file); training from scratch")
        return 0, 0, None
    saved = checkpoint_layout(os.path.join(args.load, tag))
    if saved != (args.model_parallel_size, args.pipe_parallel_size):
        flags = f"--model-parallel-size {saved[0]} --pipe-parallel-size {saved[1]}"
        raise UsageError(f"--load {args.load}: checkpoint {tag} was saved with {flags} but this run uses "
                         f"--model-parallel-size {args.model_parallel_size} --pipe-parallel-size "
                         f"{args.pipe_parallel_size}; resume with {flags}, or convert the checkpoint to the new "
                         "layout first (scripts/convert_checkpoint.py)")
    full = not args.finetune
    try:
        path, client = engine.load_checkpoint(args.load, tag=tag, load_module_only=args.finetune,
                                              load_optimizer_states=full and not args.no_load_optim,
                                              load_lr_scheduler_states=full and not args.no_load_optim)
    except RuntimeError as error:
        if "size mismatch" not in str(error) and "Missing key" not in str(error):
            raise
        detail = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line or "Missing" in line),
                      str(error).splitlines()[0])
        raise UsageError(f"--load {args.load}: checkpoint {tag} does not fit the model the flags describe ({detail}); "
                         "give the shape it was trained with (--num-layers, --hidden-size, --num-attention-heads, "
                         "--max-position-embeddings, tokenizer)") from None
    if path is None:
        raise UsageError(f"--load {args.load}: DeepSpeed could not load checkpoint {tag}")
    print_rank_0(f"loaded checkpoint {path}")
    if args.finetune:
        return 0, 0, tag
    if not args.no_load_rng:
        _restore_rng(os.path.join(args.load, tag))
    saved_args = client.get("args", {})
    _warn_about_other_data(args, saved_args)
    iteration = client.get("iteration", 0)
    if isinstance(engine.lr_scheduler, LambdaLR):  # ours (a ds_config "scheduler" keeps DeepSpeed's state)
        try:
            taken = settings_from_checkpoint(args, saved_args)
        except ValueError as error:
            raise UsageError(f"--load {args.load}: {error}") from None
        if taken:
            print_rank_0(taken)
        steps = iteration if args.no_load_optim else engine.lr_scheduler.last_epoch  # fp16 skips are not steps
        continue_schedule(engine.lr_scheduler, steps, args.lr)
    return iteration, client.get("consumed_samples", 0), tag


def save_checkpoint(engine, args, iteration, consumed_samples, protected=()):
    """Every rank writes its random-number states and the engine's states into the tag folder; once all
    have, rank 0 commits the tag (manifest, then `latest`) and, with --keep-last-n-checkpoints, deletes
    older committed tags (never one in `protected`, such as the tag this run resumed from)."""
    started = time.time()
    tag = f"global_step{iteration}"
    folder = os.path.join(args.save, tag)
    client_state = {"iteration": iteration, "consumed_samples": consumed_samples,
                    "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list,
                                                                                   tuple, type(None)))}}
    try:
        os.makedirs(folder, exist_ok=True)
        tags.torch_save_atomically(rng_state(), _rng_file(folder))
        engine.save_checkpoint(args.save, tag=tag, client_state=client_state, save_latest=False)
    except OSError as error:  # a full disk, a quota: this rank stops; the launcher stops the others
        raise UsageError(f"--save {args.save}: writing checkpoint {tag} failed ({error}); the last complete "
                         f"checkpoint ({tags.read_latest(args.save) or 'none'}) is as it was: free space, then "
                         "resume from it with --load") from None
    dist.barrier()
    if dist.get_rank() == 0:
        tags.commit(args.save, tag, iteration, {
            "tensor_parallel": mpu.get_model_parallel_world_size(),
            "pipeline_parallel": mpu.get_pipeline_model_parallel_world_size(),
            "data_parallel": mpu.get_data_parallel_world_size(), "zero_stage": engine.zero_optimization_stage()})
        if args.keep_last_n_checkpoints:
            tags.prune(args.save, args.keep_last_n_checkpoints, {tag, *protected})
    dist.barrier()
    print_rank_0(f"saved checkpoint at iteration {iteration} to {args.save} ({time.time() - started:.1f} s)")
