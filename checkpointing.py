"""Checkpoints of a training run: save and resume through the DeepSpeed engine.

A tag folder holds what engine.save_checkpoint writes (model, optimizer and scheduler states; the
iteration, consumed samples and flags as client state) and one file of random-number states per rank,
`rng_state_tpTT_ppPP_dpDDD.pt`: every rank draws dropout from streams of its own (pipeline stages and
tensor ranks differ), so each rank restores its own and a resumed run draws the masks an unbroken run
draws. Reading checkpoints without an engine (converters, evaluation) is checkpoint_files.py's.
"""

import os
import time

import torch
from torch.optim.lr_scheduler import LambdaLR

import mpu
from checkpoint_files import checkpoint_layout, latest_tag
from initialize import UsageError, print_rank_0, rng_state, set_rng_state
from learning_rates import continue_schedule, settings_from_checkpoint

DATA_FLAGS = {"data_path": "--data-path", "train_data": "--train-data"}


def _rng_file(folder):
    return os.path.join(folder, f"rng_state_tp{mpu.get_model_parallel_rank():02d}_"
                                f"pp{mpu.get_pipeline_model_parallel_rank():02d}_"
                                f"dp{mpu.get_data_parallel_rank():03d}.pt")


def _checkpoint_layout(load_dir):
    """(tag, (tensor-parallel size, pipeline stages)) of the latest checkpoint in load_dir, or None if
    there is none."""
    if not os.path.isfile(os.path.join(load_dir, "latest")):
        return None
    tag = latest_tag(load_dir)
    folder = os.path.join(load_dir, tag)
    if not os.path.isdir(folder):
        raise UsageError(f"--load {load_dir}: 'latest' names {tag!r} but {folder} does not exist")
    return tag, checkpoint_layout(folder)


def _restore_rng(folder, client):
    path = _rng_file(folder)
    if os.path.isfile(path):
        set_rng_state(torch.load(path, map_location="cpu", weights_only=False))
    elif "rng_state" in client:  # written before random states were saved per rank: one state for all
        set_rng_state(client["rng_state"])
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
    layout = _checkpoint_layout(args.load)
    if layout is None:
        print_rank_0(f"warning: no checkpoint in --load {args.load} (no 'latest' file); training from scratch")
        return 0, 0, None
    tag, saved = layout
    if saved != (args.model_parallel_size, args.pipe_parallel_size):
        flags = f"--model-parallel-size {saved[0]} --pipe-parallel-size {saved[1]}"
        raise UsageError(f"--load {args.load}: checkpoint {tag} was saved with {flags} but this run uses "
                         f"--model-parallel-size {args.model_parallel_size} --pipe-parallel-size "
                         f"{args.pipe_parallel_size}; resume with {flags}, or convert the checkpoint to the new "
                         "layout first (scripts/convert_checkpoint.py)")
    full = not args.finetune
    path, client = engine.load_checkpoint(args.load, tag=tag, load_module_only=args.finetune,
                                          load_optimizer_states=full and not args.no_load_optim,
                                          load_lr_scheduler_states=full and not args.no_load_optim)
    if path is None:
        raise UsageError(f"--load {args.load}: DeepSpeed could not load checkpoint {tag}")
    print_rank_0(f"loaded checkpoint {path}")
    if args.finetune:
        return 0, 0, tag
    if not args.no_load_rng:
        _restore_rng(os.path.join(args.load, tag), client)
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


def save_checkpoint(engine, args, iteration, consumed_samples):
    """Every rank writes its random-number states into the tag folder, then the engine its states."""
    started = time.time()
    tag = f"global_step{iteration}"
    folder = os.path.join(args.save, tag)
    os.makedirs(folder, exist_ok=True)
    torch.save(rng_state(), _rng_file(folder))
    client_state = {"iteration": iteration, "consumed_samples": consumed_samples,
                    "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list,
                                                                                   tuple, type(None)))}}
    engine.save_checkpoint(args.save, tag=tag, client_state=client_state)
    print_rank_0(f"saved checkpoint at iteration {iteration} to {args.save} ({time.time() - started:.1f} s)")
