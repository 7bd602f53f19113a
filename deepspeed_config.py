"""The DeepSpeed config of a run: the JSON file is authoritative, "auto" values are filled from flags.

With no --deepspeed_config the config is built from the flags (ZeRO-0, fp32 unless --bf16/--fp16,
AdamW). A key DeepSpeed does not know is an error with a suggestion (DeepSpeed itself ignores
unknown top-level keys); an explicit JSON value that contradicts an explicitly given flag is an error,
not a silent pick; batch sizes that do not multiply out are an error.
"""

import difflib
import json
import math

from deepspeed.accelerator import get_accelerator

from learning_rates import warmup_iters

KNOWN_KEYS = frozenset("""
train_batch_size train_micro_batch_size_per_gpu gradient_accumulation_steps optimizer scheduler
communication_data_type seq_parallel_communication_data_type prescale_gradients gradient_predivide_factor
gradient_allreduce_op sparse_gradients fp16 bf16 bfloat16 amp torch_autocast gradient_clipping zero_optimization
zero_allow_untested_optimizer zero_force_ds_cpu_optimizer aio activation_checkpointing sparse_attention
flops_profiler steps_per_print wall_clock_breakdown dump_state memory_breakdown tensorboard wandb csv_monitor comet
comms_logger elasticity autotuning checkpoint data_types data_efficiency curriculum_learning progressive_layer_drop
compression_training eigenvalue quantize_training pipeline nebula dataloader_drop_last disable_allgather timers
compile hybrid_engine weight_quantization use_data_before_expert_parallelism expert_parallel log_level
disable_python_gc legacy_fusion managed_gradient_accumulation vocabulary_size graph_harvesting tensor_parallel
""".split())


# Keys DeepSpeed knows whose feature needs the model or the data loader to take part, which ours do not:
# accepted, they would change nothing (or something else than asked) without a word.
UNHONOURED_KEYS = {
    "curriculum_learning": "DeepSpeed's curriculum needs its own data sampler and a model that takes the seqlen",
    "data_efficiency": "DeepSpeed's data efficiency (curriculum, random-LTD) needs its own data sampler and layers",
    "progressive_layer_drop": "progressive layer drop needs a model whose forward takes its keep probability",
    "compression_training": "DeepSpeed's compression replaces the model's layers with its own",
    "quantize_training": "DeepSpeed's quantize-aware training needs its own layers",
    "weight_quantization": "weight quantization is DeepSpeed's inference/hybrid-engine feature",
    "eigenvalue": "the eigenvalue computation serves progressive layer drop and quantization, both refused",
    "sparse_attention": "sparse attention needs DeepSpeed's SparseSelfAttention in the model (use "
                        "--attention-types local/linear for cheaper attention)",
    "hybrid_engine": "the hybrid engine is DeepSpeed-Chat's RLHF generation engine",
    "elasticity": "elastic batch sizes would override the batch flags this run's data is sized from",
    "amp": "NVIDIA apex amp is not used here: bf16/fp16 sections (or --bf16/--fp16) set the precision",
}


class ConfigError(ValueError):
    pass


def _check_keys(config, source):
    for key in config:
        if key in UNHONOURED_KEYS:
            raise ConfigError(f"{source}: {key!r} is a DeepSpeed feature this project cannot honour "
                              f"({UNHONOURED_KEYS[key]}); remove the section")
        if key.startswith("_") or key in KNOWN_KEYS:
            continue
        close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; see DeepSpeed's configuration reference"
        raise ConfigError(f"{source}: unknown key {key!r}{hint} (keys starting with '_' are comments)")


class _Filler:
    """Fills "auto" (or absent) values from flags and reports explicit contradictions."""

    def __init__(self, args, source):
        self.args, self.source = args, source

    def resolve(self, section, key, flag, value, path=None):
        """The value to use for section[key] (set in place): the config's unless it is "auto" or absent."""
        path = path or key
        current = section.get(key, "auto")
        if current == "auto":
            section[key] = value
            return value
        if flag is not None and flag.lstrip("-").replace("-", "_") in self.args.explicit and current != value:
            raise ConfigError(f"{self.source} sets {path} = {current!r} but {flag} {value!r} was given: "
                              f"remove one of them or make them agree")
        return current


def _cpu():
    return get_accelerator().device_name() == "cpu"


def build_ds_config(args, data_parallel_size):
    """The config dict for deepspeed.initialize; updates args.batch_size, args.gradient_accumulation_steps,
    args.fp16, args.bf16 and args.bf16_weights to what the config decides."""
    source = args.deepspeed_config or "the ds_config built from flags"
    if args.deepspeed_config:
        try:
            with open(args.deepspeed_config, encoding="utf-8") as f:
                config = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"--deepspeed_config {args.deepspeed_config}: no such file") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"{args.deepspeed_config}:{error.lineno}: not valid JSON ({error.msg})") from None
    else:
        config = {}
    _check_keys(config, source)
    fill = _Filler(args, source)
    _batch_sizes(config, fill, args, data_parallel_size, source)
    _precision(config, fill, args, source)
    zero = config.setdefault("zero_optimization", {})
    stage = fill.resolve(zero, "stage", "--zero-stage", args.zero_stage if args.zero_stage is not None else 0,
                         "zero_optimization.stage")
    if args.pipe_parallel_size > 1 and stage > 1:
        raise ConfigError(f"{source}: ZeRO stage {stage} with --pipe-parallel-size {args.pipe_parallel_size}: "
                          "DeepSpeed's pipeline engine takes ZeRO stage 0 or 1 (e.g. ds_configs/ds_zero1.json)")
    fill.resolve(config, "gradient_clipping", "--clip-grad", args.clip_grad)
    _optimizer(config, fill, args, stage, source)
    _scheduler(config, args, source)
    if args.deepspeed_activation_checkpointing:
        section = config.setdefault("activation_checkpointing", {})
        for key, flag in (("partition_activations", "--partition-activations"),
                          ("contiguous_memory_optimization", "--contigious-checkpointing"),
                          ("cpu_checkpointing", "--checkpoint-in-cpu"),
                          ("synchronize_checkpoint_boundary", "--synchronize-each-layer")):
            dest = flag[2:].replace("-", "_")
            setattr(args, dest, fill.resolve(section, key, flag, getattr(args, dest), f"activation_checkpointing.{key}"))
        fill.resolve(section, "number_checkpoints", None, math.ceil(args.num_layers / args.checkpoint_num_layers))
    config.setdefault("steps_per_print", 10 ** 9)  # training.py logs; DeepSpeed's own step lines are noise
    leftover = _find_auto(config)
    if leftover:
        raise ConfigError(f"{source}: {leftover} is \"auto\" but no flag fills it; write a value")
    return config


def _batch_sizes(config, fill, args, dp, source):
    micro = fill.resolve(config, "train_micro_batch_size_per_gpu", "--batch-size", args.batch_size)
    if args.global_batch_size is not None:
        if "gradient_accumulation_steps" in args.explicit and \
                args.global_batch_size != micro * dp * args.gradient_accumulation_steps:
            raise ConfigError(f"--global-batch-size {args.global_batch_size} != --batch-size {micro} x data-parallel "
                              f"size {dp} x --gradient-accumulation-steps {args.gradient_accumulation_steps}: give "
                              "two of the three")
        fill.resolve(config, "train_batch_size", "--global-batch-size", args.global_batch_size)
    total = config.get("train_batch_size", "auto")
    if config.get("gradient_accumulation_steps", "auto") == "auto" and total != "auto":
        if total % (micro * dp):
            raise ConfigError(f"{source}: train_batch_size {total} is not divisible by micro batch {micro} x "
                              f"data-parallel size {dp}; change train_batch_size, --batch-size or the world size")
        config["gradient_accumulation_steps"] = total // (micro * dp)
    accumulation = fill.resolve(config, "gradient_accumulation_steps", "--gradient-accumulation-steps",
                                args.gradient_accumulation_steps)
    total = fill.resolve(config, "train_batch_size", None, micro * accumulation * dp)
    if total != micro * accumulation * dp:
        raise ConfigError(f"{source}: train_batch_size {total} != micro batch {micro} x gradient accumulation "
                          f"{accumulation} x data-parallel size {dp} = {micro * accumulation * dp}; "
                          "make them agree (or write \"auto\")")
    args.batch_size, args.gradient_accumulation_steps = micro, accumulation


def _precision(config, fill, args, source):
    """fp16 / bf16 sections: DeepSpeed's low-precision weights with an fp32 master copy (--fp16,
    --bf16-weights); torch_autocast: fp32 weights, the model run under torch.autocast (--bf16). After it,
    args.bf16 says bf16 compute either way and args.bf16_weights which of the two."""
    fp16 = config.setdefault("fp16", {})
    bf16 = config.setdefault("bf16", config.pop("bfloat16", {}))
    autocast = config.setdefault("torch_autocast", {})
    args.fp16 = bool(fill.resolve(fp16, "enabled", "--fp16", args.fp16, "fp16.enabled"))
    written = bf16.get("enabled", "auto") != "auto"
    args.bf16_weights = bool(fill.resolve(bf16, "enabled", "--bf16-weights", args.bf16_weights, "bf16.enabled"))
    if written and args.bf16_weights and "bf16" in args.explicit and "bf16_weights" not in args.explicit:
        raise ConfigError(f"{source} enables bf16 (bf16 weights, DeepSpeed's bf16 optimizer) and --bf16 (fp32 weights "
                          "under torch.autocast) was given: give --bf16-weights for the first, or set bf16.enabled "
                          "to \"auto\" for the second")
    if written and not args.bf16_weights and "bf16" in args.explicit and autocast.get("enabled", "auto") == "auto":
        raise ConfigError(f"{source} sets bf16.enabled = false but --bf16 was given: remove one of them (or enable "
                          "torch_autocast there)")
    autocast_wanted = args.bf16 and not args.bf16_weights
    if bool(fill.resolve(autocast, "enabled", "--bf16", autocast_wanted, "torch_autocast.enabled")):
        dtype = fill.resolve(autocast, "dtype", None, "torch.bfloat16", "torch_autocast.dtype")
        if dtype not in ("torch.bfloat16", "bfloat16"):
            raise ConfigError(f"{source}: torch_autocast.dtype {dtype!r}: autocast here is bfloat16 (for fp16 use "
                              "--fp16, DeepSpeed's fp16 with loss scaling)")
        if args.fp16 or args.bf16_weights:
            raise ConfigError(f"{source}: torch_autocast and {'fp16' if args.fp16 else 'bf16'} are both enabled; "
                              "choose one")
        args.bf16 = True
    else:
        args.bf16 = args.bf16_weights
    if args.fp16 and args.bf16:
        raise ConfigError(f"{source}: fp16 and bf16 are both enabled; choose one")
    if args.fp16 and _cpu():
        raise ConfigError("--fp16: DeepSpeed does not support fp16 on the CPU accelerator "
                          "(\"Type fp16 is not supported on your device\"); use --bf16 on CPU, or run on a GPU")
    if args.fp16:
        for key, flag, value in (("loss_scale", "--loss-scale", args.loss_scale),
                                 ("initial_scale_power", "--initial-loss-scale", int(math.log2(args.initial_loss_scale))),
                                 ("loss_scale_window", "--loss-scale-window", args.loss_scale_window),
                                 ("hysteresis", "--hysteresis", args.hysteresis),
                                 ("min_loss_scale", "--min-loss-scale", args.min_loss_scale)):
            fill.resolve(fp16, key, flag, value, f"fp16.{key}")
    if args.fp32_allreduce:
        fill.resolve(config, "communication_data_type", "--fp32-allreduce", "fp32")


def precision_name(args):
    """The run's precision as a checkpoint's manifest records it ("bf16": bf16 weights, as every bf16 run
    was before --bf16 meant autocast; "bf16 autocast": fp32 weights under autocast)."""
    if args.bf16:
        return "bf16" if args.bf16_weights else "bf16 autocast"
    return "fp16" if args.fp16 else "fp32"


# --optimizer -> the ds_config optimizer type (Adafactor and SGD are torch.optim's, which DeepSpeed builds by name)
OPTIMIZER_TYPES = {"adamw": "AdamW", "adafactor": "Adafactor", "lamb": "Lamb", "sgd": "SGD"}


def _optimizer(config, fill, args, stage, source):
    optimizer = config.setdefault("optimizer", {"type": OPTIMIZER_TYPES[args.optimizer], "params": {}})
    if "optimizer" in args.explicit and optimizer.get("type", "").lower() != args.optimizer:
        raise ConfigError(f"{source} names the optimizer {optimizer.get('type')!r} but --optimizer {args.optimizer} "
                          "was given: drop one of them")
    params = optimizer.setdefault("params", {})
    args.lr = fill.resolve(params, "lr", "--lr", args.lr, "optimizer.params.lr")
    kind = optimizer.get("type", "").lower()
    if kind in ("adafactor", "sgd"):
        fill.resolve(params, "weight_decay", "--weight-decay", args.weight_decay, "optimizer.params.weight_decay")
        if kind == "sgd":
            fill.resolve(params, "momentum", "--sgd-momentum", args.sgd_momentum, "optimizer.params.momentum")
            config.setdefault("zero_allow_untested_optimizer", True)  # elementwise: ZeRO's flat partitions are fine
    if kind == "adafactor" and stage > 0:
        raise ConfigError(f"{source}: Adafactor with ZeRO stage {stage}: Adafactor factors each weight's second "
                          "moments over its rows and columns, and ZeRO hands it flat 1-D partitions instead; use "
                          "--zero-stage 0 (ZeRO-0 fp32 or bf16)")
    if optimizer.get("type", "").lower() in ("adam", "adamw", "lamb", "onebitadam", "onebitlamb", "zerooneadam"):
        fill.resolve(params, "weight_decay", "--weight-decay", args.weight_decay, "optimizer.params.weight_decay")
        fill.resolve(params, "eps", "--adam-eps", args.adam_eps, "optimizer.params.eps")
        betas, flags = params.get("betas", "auto"), [args.adam_beta1, args.adam_beta2]
        if betas == "auto":
            params["betas"] = flags
        elif {"adam_beta1", "adam_beta2"} & args.explicit and list(betas) != flags:
            raise ConfigError(f"{source} sets optimizer.params.betas = {list(betas)} but --adam-beta1 "
                              f"{args.adam_beta1} --adam-beta2 {args.adam_beta2} was given: remove one of them or "
                              "make them agree")
    if optimizer.get("type", "").lower() == "lamb" and _cpu():
        raise ConfigError("the ds_config's optimizer Lamb is DeepSpeed's FusedLamb, a CUDA kernel: on the CPU use "
                          "AdamW (e.g. ds_configs/ds_zero2_bf16.json), or run on a GPU")
    if optimizer.get("type", "").lower() in ("adam", "adamw") and _cpu() and not _offloaded(config):
        params.setdefault("torch_adam", True)  # no JIT build of DeepSpeed's fused Adam on a CPU
        params.setdefault("fused", True)  # torch's fused CPU AdamW: one pass per tensor, 5x its foreach form


def _offloaded(config):
    device = config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device not in ("none", None)


# What each DeepSpeed scheduler can take of the schedule flags: flag -> (its field, the field's value from
# args). A flag missing from a scheduler's row has no field there: given explicitly, it is refused.
SCHEDULER_FIELDS = {
    "WarmupLR": {"--lr": ("warmup_max_lr", lambda a: a.lr), "--warmup": ("warmup_num_steps", warmup_iters)},
    "WarmupDecayLR": {"--lr": ("warmup_max_lr", lambda a: a.lr), "--warmup": ("warmup_num_steps", warmup_iters),
                      "--lr-decay-iters": ("total_num_steps", lambda a: a.lr_decay_iters),
                      "--min-lr": ("warmup_min_lr", lambda a: a.min_lr)},  # where warmup starts and decay ends
    "WarmupCosineLR": {"--warmup": ("warmup_num_steps", warmup_iters),
                       "--lr-decay-iters": ("total_num_steps", lambda a: a.lr_decay_iters),
                       "--min-lr": ("cos_min_ratio", lambda a: a.min_lr / a.lr)},  # the rate is the optimizer's
    "OneCycle": {"--lr": ("cycle_max_lr", lambda a: a.lr), "--min-lr": ("cycle_min_lr", lambda a: a.min_lr)},
    "LRRangeTest": {"--min-lr": ("lr_range_test_min_lr", lambda a: a.min_lr)},
}
# the flags that set each schedule setting (any of them given counts as the setting given)
SCHEDULE_SETTINGS = {"--lr": ("lr",), "--warmup": ("warmup", "lr_warmup_iters", "lr_warmup_samples"),
                     "--lr-decay-iters": ("lr_decay_iters", "lr_decay_samples"), "--min-lr": ("min_lr",)}


def _scheduler(config, args, source):
    """A ds_config scheduler takes the schedule flags where it has a field for them ("auto" or absent
    fields are filled); a flag given explicitly that contradicts its field, or that it has no field
    for, is an error."""
    if "scheduler" not in config:
        return
    kind = config["scheduler"].get("type")
    if "lr_decay_style" in args.explicit:
        raise ConfigError(f"{source} names the scheduler {kind!r} and --lr-decay-style was given: drop one of them")
    if kind not in SCHEDULER_FIELDS:
        raise ConfigError(f"{source}: scheduler type {kind!r} is not one of DeepSpeed's "
                          f"({', '.join(SCHEDULER_FIELDS)})")
    params = config["scheduler"].setdefault("params", {})
    fields = SCHEDULER_FIELDS[kind]
    for flag, dests in SCHEDULE_SETTINGS.items():
        given = next((d for d in dests if d in args.explicit), None)
        if flag not in fields:
            if given and flag != "--lr":  # WarmupCosineLR and LRRangeTest take the rate from the optimizer
                raise ConfigError(f"{source}: the scheduler {kind} has no setting for --{given.replace('_', '-')} "
                                  f"(its fields: {', '.join(f for f, _ in fields.values())}); drop the flag, or "
                                  "drop the scheduler to use the flags' schedule (--lr-decay-style)")
            continue
        field, value_of = fields[flag]
        value, current = value_of(args), params.get(field, "auto")
        if current == "auto":
            params[field] = value
        elif given and not math.isclose(current, value, rel_tol=1e-9, abs_tol=1e-12):
            raise ConfigError(f"{source} sets scheduler.params.{field} = {current!r} but --{given.replace('_', '-')} "
                              f"gives {value!r}: remove one of them or make them agree")


def _find_auto(value, path=""):
    if value == "auto":
        return path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_auto(item, f"{path}.{key}" if path else key)
            if found:
                return found
    return None
