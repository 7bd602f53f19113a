"""Checkpoints of a training run: save and resume through the DeepSpeed engine.

A tag folder holds what engine.save_checkpoint writes (model, optimizer and scheduler states; the
iteration, consumed samples and flags as client state) and one file of random-number states per rank,
`rng_state_tpTT_ppPP_dpDDD.pt`: every rank draws dropout from streams of its own (pipeline stages and
tensor ranks differ), so each rank restores its own and a resumed run draws the masks an unbroken run
draws. A save is committed (manifest, then `latest`) only when every rank has written; a resume picks
the newest complete tag (tags.py).
"""

import os
import tempfile
import time

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LambdaLR

import mpu
from deepspeed_config import precision_name
from initialize import UsageError, print_rank_0, rng_state, set_random_seed, set_rng_state
from learning_rates import continue_schedule, settings_from_checkpoint

from . import tags
from .files import checkpoint_layout, has_model_files, is_complete, universal_folder
from .universal import load_universal, write_universal

DATA_FLAGS = {"data_path": "--data-path", "train_data": "--train-data"}


def check_save_folder(args):
    """--save must be a folder this rank can write to: found at start-up, not at the first save after
    hours of training. Creates it; one line naming it otherwise."""
    if not args.save or args.skip_train:
        return
    try:
        os.makedirs(args.save, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=args.save)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise UsageError(f"--save {args.save}: this folder cannot be written ({error.strerror}); nothing has "
                         "been trained yet: give a folder you can write to, or fix its permissions") from None


def _rng_file(folder):
    return os.path.join(folder, f"rng_state_tp{mpu.get_model_parallel_rank():02d}_"
                                f"pp{mpu.get_pipeline_model_parallel_rank():02d}_"
                                f"dp{mpu.get_data_parallel_rank():03d}.pt")


def _asked_tag(args):
    """The tag --load-tag (`best`: the one the `best` file names) or --ckpt-step asks for, or None."""
    return tags.named_tag(args.load, args.load_tag) or (None if args.ckpt_step is None else
                                                         f"global_step{args.ckpt_step}")


def _tag_to_load(args):
    """The complete tag to resume from: --load-tag/--ckpt-step, else the one `latest` names, else the
    newest complete one before it (saying why); None when the directory holds no committed checkpoint."""
    asked = _asked_tag(args)
    if args.load_tag == tags.BEST and asked is None:
        raise UsageError(f"--load-tag best: {args.load} has no 'best' file (written by runs with --save-best-k and "
                         "validation): pick a tag with --load-tag or --ckpt-step")
    if not asked and tags.read_latest(args.load) is None:
        if os.path.isdir(args.load) and os.listdir(args.load) and not any(
                tags.step_of(t) is not None for t in os.listdir(args.load)):
            raise UsageError(f"--load {args.load} is not a checkpoint directory (no 'latest' file, no global_step "
                             "folders, but other files): point --load at a folder written by --save, or at an empty or "
                             "new folder to start afresh")
        return None
    try:
        tag, passed_over = tags.choose_tag(args.load, asked, mpu.get_data_parallel_world_size())
    except tags.NoCompleteTag as error:
        advice = "" if asked else ". Pick one with --load-tag, or start afresh in another --save folder"
        raise UsageError(f"--load {args.load}: {error}{advice}") from None
    if passed_over:
        print_rank_0(f"warning: --load {args.load}: {passed_over[0]}; resuming from {tag}, the newest complete "
                     "checkpoint")
    return tag


def _restore_rng(folder):
    path = _rng_file(folder)
    if os.path.isfile(path):
        set_rng_state(torch.load(path, map_location="cpu", weights_only=True))
    else:
        print_rank_0(f"warning: {folder} holds no random-number states; dropout continues from --seed")


def _data_read(values):
    """What a run with these flags ({name: value}) trains on, in words."""
    for name, flag in DATA_FLAGS.items():
        if values.get(name):
            return f"{flag} {' '.join(map(str, values[name]))}"
    return "the bundled corpus (--train-data sample)"


def _warn_about_other_data(args, saved_args):
    saved, now = _data_read(saved_args), _data_read(vars(args))
    if saved != now:
        print_rank_0(f"warning: --load {args.load}: the checkpoint was trained on {saved} but this run reads {now}; "
                     "training continues at the checkpoint's data position in the new data")


def resume_position(args):
    """(iteration, consumed samples) of the tag a resume will most likely load, from its manifest, before
    any engine exists (the training data is sized from it: a resume with a smaller global batch needs
    more samples than --train-iters x its batch); (0, 0) when nothing says."""
    if not args.load or args.finetune:  # a fine-tune starts at iteration 0, sample 0
        return 0, 0
    tag = _asked_tag(args) or tags.read_latest(args.load)
    manifest = tags.read_manifest(os.path.join(args.load, tag)) if tag else None
    return (manifest.get("iteration", 0), manifest.get("consumed_samples", 0)) if manifest else (0, 0)


def layout_of_run(engine, args):
    """This run's layout as a manifest records it."""
    return {"tensor_parallel": mpu.get_model_parallel_world_size(),
            "pipeline_parallel": mpu.get_pipeline_model_parallel_world_size(),
            "data_parallel": mpu.get_data_parallel_world_size(), "zero_stage": engine.zero_optimization_stage(),
            "precision": precision_name(args)}


_LAYOUT_WORDS = (("tensor_parallel", "TP {}"), ("pipeline_parallel", "PP {}"), ("data_parallel", "DP {}"),
                 ("zero_stage", "ZeRO-{}"), ("precision", "{}"))


def _describe(layout):
    return ", ".join(words.format(layout[key]) for key, words in _LAYOUT_WORDS if key in layout)


def _other_layout(folder, now):
    """The layout a tag was saved at when it differs from `now` (None when the same: DeepSpeed's own
    loading serves); keys an older manifest lacks are taken as unchanged."""
    saved = tags.saved_layout(folder)
    if saved is None:
        tensor, pipeline = checkpoint_layout(folder)
        saved = {"tensor_parallel": tensor, "pipeline_parallel": pipeline}
    return saved if any(saved[key] != now[key] for key in now if key in saved) else None


def _convert_once(args, tag, folder, target):
    """Rank 0 writes the tag's layout-free form into `target` (kept for later resumes); all ranks wait."""
    problem = None
    if dist.get_rank() == 0:
        try:
            write_universal(folder, target)
        except OSError as error:
            problem = (f"writing its layout-free form into {target} failed ({error}); convert it into another folder "
                       f"with python scripts/convert_checkpoint.py --load {args.load} --save NEW_FOLDER, then --load "
                       "NEW_FOLDER")
        except (ValueError, KeyError) as error:
            problem = str(error)
    answer = [problem]
    dist.broadcast_object_list(answer, src=0)
    if answer[0]:
        raise UsageError(f"--load {args.load}: checkpoint {tag} cannot be resumed at this layout: {answer[0]}")


def _load_universal(engine, args, tag, why, now):
    """Resume through the tag's layout-free form (converting it once if needed); returns (iteration,
    consumed samples, saved args, scheduler steps)."""
    folder = os.path.join(args.load, tag)
    target = universal_folder(folder)
    if not is_complete(target):
        print_rank_0(f"--load {args.load}: checkpoint {tag} {why}: converting it to its layout-free form in {target} "
                     "(once), then resuming")
        _convert_once(args, tag, folder, target)
    with_optimizer, started = not (args.finetune or args.no_load_optim), time.time()
    try:
        state = load_universal(engine, args, target, with_optimizer)
    except ValueError as error:
        raise UsageError(f"--load {args.load}: {error}") from None
    print_rank_0(f"loaded checkpoint {target} (layout-free, at {_describe(now)}; {time.time() - started:.1f} s); "
                 "random streams start afresh from --seed and the iteration")
    set_random_seed(args.seed + state["iteration"])
    return state["iteration"], state["consumed_samples"], state["args"], state["scheduler_steps"]


def _load_native(engine, args, tag):
    """DeepSpeed's own loading at the saved layout; returns (iteration, consumed samples, saved args,
    scheduler steps)."""
    full, started = not args.finetune, time.time()
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
    print_rank_0(f"loaded checkpoint {path} ({time.time() - started:.1f} s)")
    if not args.finetune and not args.no_load_rng:
        _restore_rng(os.path.join(args.load, tag))
    scheduler = engine.lr_scheduler
    return (client.get("iteration", 0), client.get("consumed_samples", 0), client.get("args", {}),
            scheduler.last_epoch if isinstance(scheduler, LambdaLR) else None)


def load_checkpoint(engine, args):
    """Resume from args.load; returns (iteration, consumed samples, tag or None). A checkpoint saved at
    another layout (tensor-, pipeline-, data-parallel size, ZeRO stage, precision), or a layout-free one,
    is resumed through its layout-free form (universal.py)."""
    tag = _tag_to_load(args)
    if tag is None:
        print_rank_0(f"warning: no checkpoint in --load {args.load} (no 'latest' file); training from scratch")
        return 0, 0, None
    folder, now = os.path.join(args.load, tag), layout_of_run(engine, args)
    native = has_model_files(folder)
    saved_layout = _other_layout(folder, now) if native else None
    if args.universal_checkpoint or saved_layout is not None or not native:
        if not isinstance(engine.lr_scheduler, LambdaLR) and not args.finetune:
            raise UsageError(f"--load {args.load}: a ds_config 'scheduler' keeps a state of DeepSpeed's own, which "
                             "does not change layout; resume at the saved layout, or take the schedule from the "
                             "flags (--lr-decay-style, --warmup)")
        why = (f"was saved at {_describe(saved_layout)} and this run is {_describe(now)}" if saved_layout else
               "is read through its layout-free form (--universal-checkpoint)")
        iteration, consumed, saved_args, steps = _load_universal(engine, args, tag, why, now)
    else:
        iteration, consumed, saved_args, steps = _load_native(engine, args, tag)
    if args.finetune:
        return 0, 0, tag
    _warn_about_other_data(args, saved_args)
    if isinstance(engine.lr_scheduler, LambdaLR):  # ours (a ds_config "scheduler" keeps DeepSpeed's state)
        try:
            taken = settings_from_checkpoint(args, saved_args)
        except ValueError as error:
            raise UsageError(f"--load {args.load}: {error}") from None
        if taken:
            print_rank_0(taken)
        continue_schedule(engine.lr_scheduler, iteration if args.no_load_optim else steps, args.lr)  # fp16 skips are not steps
    return iteration, consumed, tag


def save_checkpoint(engine, args, iteration, consumed_samples, protected=(), also=None, validation_loss=None):
    """Every rank writes its random-number states, the engine's states and `also`'s (an object with
    save(folder), such as the K-FAC preconditioner) into the tag folder; once all have, rank 0 commits the
    tag (manifest with `validation_loss`, then `latest`) and, with --keep-last-n-checkpoints or
    --save-best-k, deletes committed tags that are neither among the newest N nor the K with the lowest
    validation loss (never one in `protected`, such as the tag this run resumed from)."""
    started = time.time()
    tag = f"global_step{iteration}"
    folder = os.path.join(args.save, tag)
    client_state = {"iteration": iteration, "consumed_samples": consumed_samples,
                    "optimizer_parameter_names": engine.optimizer_parameter_names,
                    "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list,
                                                                                   tuple, type(None)))}}
    try:
        os.makedirs(folder, exist_ok=True)
        tags.torch_save_atomically(rng_state(), _rng_file(folder))
        engine.save_checkpoint(args.save, tag=tag, client_state=client_state, save_latest=False)
        if also is not None:
            also.save(folder)
    except OSError as error:  # a full disk, a quota: this rank stops; the launcher stops the others
        raise UsageError(f"--save {args.save}: writing checkpoint {tag} failed ({error}); the last complete "
                         f"checkpoint ({tags.read_latest(args.save) or 'none'}) is as it was: free space, then "
                         "resume from it with --load") from None
    dist.barrier()
    if dist.get_rank() == 0:
        tags.commit(args.save, tag, iteration, layout_of_run(engine, args), consumed_samples, validation_loss)
        if args.keep_last_n_checkpoints or args.save_best_k:
            tags.prune(args.save, args.keep_last_n_checkpoints or 1, {tag, *protected}, args.save_best_k)
    dist.barrier()
    print_rank_0(f"saved checkpoint at iteration {iteration} to {args.save} ({time.time() - started:.1f} s)")
