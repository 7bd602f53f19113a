"""NeMo's training command line as our flags: Hydra overrides (`trainer.max_steps=300000
model.hidden_size=768 exp_manager.checkpoint_callback_params.save_top_k=3 ...`) and `--config-path DIR
--config-name NAME` for a NeMo YAML (megatron_gpt_config.yaml and the like), read with OmegaConf as NeMo
reads them (interpolations included), the overrides applied on top.

Every setting is mapped with its meaning or refused by name with the reason; a setting that changes
nothing here (a fused kernel's switch, a logger NeMo's exp_manager replaces) is accepted at any value,
one NeMo only allows at a value is accepted at that value. The mapping, where it is not one flag:

- trainer.precision: 16 / 16-mixed is fp16 (--fp16; on a CPU a line pointing to bf16), bf16 / bf16-mixed
  is --bf16 (with model.megatron_amp_O2=True: --bf16-weights, bf16 weights beside fp32 masters), 32 is fp32;
- trainer.devices x trainer.num_nodes must equal the launcher's world size;
- model.optim.sched CosineAnnealing with constant_steps C: NeMo's Megatron-style schedule, linear warmup
  over warmup_steps, cosine decay to min_lr until max_steps - C, then min_lr for the last C steps, i.e.
  --lr-decay-style cosine --lr-decay-iters (max_steps - C). Our warmup reaches --lr one step sooner
  ((step+1)/warmup where NeMo's is step/warmup, its first step at rate 0); from the warmup's end on the
  rates are NeMo's;
- exp_manager: checkpoints in EXP/checkpoints, EXP being explicit_log_dir, else exp_dir/name
  (nemo_experiments/megatron_gpt by default), tensorboard in EXP; resume_if_exists resumes from it;
  checkpoint_callback_params.save_top_k K by monitor val_loss, mode min, is --save-best-k K (a save at
  every validation); the wandb and MLflow loggers are our --wandb-* and --mlflow-* flags.

Flags of our own given beside the overrides win over them (they come later on the command line).
"""

import os
import re

DEFAULT_EXPERIMENT = "megatron_gpt"
ANY = object()
OVERRIDE = re.compile(r"^(\+{0,2})([A-Za-z_][\w.]*)=(.*)$", re.DOTALL)
CONFIG_FLAGS = {"--config-path": "path", "-cp": "path", "--config-name": "name", "-cn": "name"}

# key -> our flag, taking the value as it is (lists as several values)
FLAGS = {
    "trainer.max_steps": "--train-iters",
    "trainer.log_every_n_steps": "--log-interval",
    "trainer.gradient_clip_val": "--clip-grad",
    "model.micro_batch_size": "--batch-size",
    "model.global_batch_size": "--global-batch-size",
    "model.tensor_model_parallel_size": "--model-parallel-size",
    "model.pipeline_model_parallel_size": "--pipe-parallel-size",
    "model.encoder_seq_length": "--seq-length",
    "model.max_position_embeddings": "--max-position-embeddings",
    "model.num_layers": "--num-layers",
    "model.hidden_size": "--hidden-size",
    "model.ffn_hidden_size": "--ffn-hidden-size",
    "model.num_attention_heads": "--num-attention-heads",
    "model.init_method_std": "--init-method-std",
    "model.hidden_dropout": "--hidden-dropout",
    "model.attention_dropout": "--attention-dropout",
    "model.layernorm_epsilon": "--layernorm-epsilon",
    "model.make_vocab_size_divisible_by": "--make-vocab-size-divisible-by",
    "model.normalization": "--normalization",
    "model.activation": "--activation",
    "model.position_embedding_type": "--position-embedding-type",
    "model.seed": "--seed",
    "model.native_amp_init_scale": "--initial-loss-scale",
    "model.native_amp_growth_interval": "--loss-scale-window",
    "model.hysteresis": "--hysteresis",
    "model.activations_checkpoint_granularity": "--recompute-granularity",
    "model.activations_checkpoint_method": "--recompute-method",
    "model.activations_checkpoint_num_layers": "--recompute-num-layers",
    "model.tokenizer.type": "--tokenizer-type",
    "model.tokenizer.vocab_file": "--vocab-file",
    "model.tokenizer.merge_file": "--merge-file",
    "model.tokenizer.model": "--tokenizer-model",
    "model.data.data_prefix": "--data-path",
    "model.data.index_mapping_dir": "--data-cache-dir",
    "model.data.splits_string": "--split",
    "model.data.num_workers": "--num-workers",
    "model.optim.lr": "--lr",
    "model.optim.weight_decay": "--weight-decay",
    "model.optim.eps": "--adam-eps",
    "model.optim.sched.min_lr": "--min-lr",
    "exp_manager.checkpoint_callback_params.every_n_train_steps": "--save-interval",
}
SWITCHES = {  # key -> our store-true flag, given when the value is true
    "model.data.reset_position_ids": "--reset-position-ids",
    "model.data.reset_attention_mask": "--reset-attention-mask",
    "model.data.eod_mask_loss": "--eod-mask-loss",
}
# key -> (the values accepted, ANY for every value; why it changes nothing here or what to give instead).
# Keys read by the mapping code below are listed with ANY.
ACCEPTED = {
    "name": (ANY, "the experiment's name (exp_manager's folder)"),
    "restore_from_path": ({None}, "a .nemo file is not read here: convert it, or resume with --load"),
    "trainer.devices": (ANY, "checked against the launcher's world size"),
    "trainer.num_nodes": (ANY, "checked against the launcher's world size"),
    "trainer.accelerator": ({"gpu", "cpu", "auto"}, "the device is the one DeepSpeed finds"),
    "trainer.precision": (ANY, "mapped"),
    "trainer.val_check_interval": (ANY, "mapped"),
    "trainer.limit_val_batches": (ANY, "mapped"),
    "trainer.limit_test_batches": (ANY, "mapped"),
    "trainer.max_epochs": (ANY, "checked: training is counted in steps"),
    "trainer.accumulate_grad_batches": ({1}, "accumulation follows from model.global_batch_size, as in NeMo"),
    "trainer.logger": ({False}, "exp_manager's loggers are mapped"),
    "trainer.enable_checkpointing": ({False}, "exp_manager's checkpoints are mapped"),
    "trainer.replace_sampler_ddp": ({False}, "the data-parallel sampler is our own"),
    "trainer.use_distributed_sampler": ({False}, "the data-parallel sampler is our own"),
    "trainer.benchmark": (ANY, "cuDNN autotuning: no cuDNN convolutions in a GPT"),
    "trainer.enable_progress_bar": (ANY, "progress is the log line every --log-interval"),
    "trainer.enable_model_summary": (ANY, "the start-up lines give the model's size"),
    "trainer.num_sanity_val_steps": (ANY, "the first validation is at --eval-interval"),
    "model.resume_from_checkpoint": ({None}, "resume with exp_manager.resume_if_exists or --load"),
    "model.virtual_pipeline_model_parallel_size": ({None, 1}, "interleaved pipeline stages are not built here"),
    "model.kv_channels": (ANY, "checked: hidden_size / num_attention_heads"),
    "model.apply_query_key_layer_scaling": (ANY, "scaling by 1/layer before an fp32 softmax and back computes the same"),
    "model.pre_process": ({True}, "every stage layout is built from --pipe-parallel-size"),
    "model.post_process": ({True}, "every stage layout is built from --pipe-parallel-size"),
    "model.persist_layer_norm": (ANY, "a fused kernel's switch"),
    "model.masked_softmax_fusion": (ANY, "a fused kernel's switch"),
    "model.bias_activation_fusion": (ANY, "a fused kernel's switch"),
    "model.bias_dropout_add_fusion": (ANY, "a fused kernel's switch"),
    "model.gradient_as_bucket_view": (ANY, "a DDP memory switch; DeepSpeed reduces the gradients"),
    "model.grad_allreduce_chunk_size_mb": (ANY, "a DDP bucket size; DeepSpeed's ds_config sets its own"),
    "model.grad_div_ar_fusion": (ANY, "a fused kernel's switch"),
    "model.gradient_accumulation_fusion": (ANY, "a fused kernel's switch"),
    "model.use_cpu_initialization": (ANY, "weights are initialised where DeepSpeed puts them"),
    "model.onnx_safe": (ANY, "no ONNX export here"),
    "model.apex_transformer_log_level": (ANY, "a logging level"),
    "model.fp32_residual_connection": ({False}, "the residual stream is in the weights' precision"),
    "model.fp16_lm_cross_entropy": ({False}, "the loss is computed in fp32"),
    "model.megatron_amp_O2": (ANY, "mapped with trainer.precision"),
    "model.sequence_parallel": ({False}, "sequence parallelism is not built here"),
    "model.nsys_profile.enabled": ({False}, "run the job under nsys yourself"),
    "model.nsys_profile.start_step": (ANY, "nsys profiling is off"),
    "model.nsys_profile.end_step": (ANY, "nsys profiling is off"),
    "model.nsys_profile.ranks": (ANY, "nsys profiling is off"),
    "model.nsys_profile.gen_shape": (ANY, "nsys profiling is off"),
    "model.tokenizer.library": ({"megatron"}, "Megatron's tokenizers are the ones built here (--tokenizer-type)"),
    "model.tokenizer.delimiter": ({None}, "the tabular tokenizer is not built here"),
    "model.data.data_impl": ({"mmap"}, ".bin/.idx data is read memory-mapped"),
    "model.data.seq_length": (ANY, "checked against model.encoder_seq_length"),
    "model.data.skip_warmup": (ANY, "memory-mapped data needs no warm-up"),
    "model.data.dataloader_type": ({"single"}, "samples are read once per epoch in a fixed order (single)"),
    "model.optim.name": (ANY, "mapped"),
    "model.optim.betas": (ANY, "mapped"),
    "model.optim.sched.name": (ANY, "mapped"),
    "model.optim.sched.warmup_steps": (ANY, "mapped"),
    "model.optim.sched.warmup_ratio": (ANY, "mapped"),
    "model.optim.sched.constant_steps": (ANY, "mapped"),
    "model.optim.sched.max_steps": (ANY, "mapped"),
    "exp_manager.explicit_log_dir": (ANY, "mapped"),
    "exp_manager.exp_dir": (ANY, "mapped"),
    "exp_manager.name": (ANY, "mapped"),
    "exp_manager.resume_if_exists": (ANY, "mapped"),
    "exp_manager.resume_ignore_no_checkpoint": (ANY, "mapped"),
    "exp_manager.create_checkpoint_callback": (ANY, "mapped"),
    "exp_manager.create_tensorboard_logger": (ANY, "mapped"),
    "exp_manager.create_wandb_logger": (ANY, "mapped"),
    "exp_manager.wandb_logger_kwargs.project": (ANY, "mapped"),
    "exp_manager.wandb_logger_kwargs.name": (ANY, "mapped"),
    "exp_manager.create_mlflow_logger": (ANY, "mapped"),
    "exp_manager.mlflow_logger_kwargs.experiment_name": (ANY, "mapped"),
    "exp_manager.mlflow_logger_kwargs.tracking_uri": (ANY, "mapped"),
    "exp_manager.mlflow_logger_kwargs.run_name": (ANY, "mapped"),
    "exp_manager.log_step_timing": (ANY, "the log line gives the time per iteration"),
    "exp_manager.step_timing_kwargs.sync_cuda": (ANY, "--log-step-parts times the parts"),
    "exp_manager.step_timing_kwargs.buffer_size": (ANY, "the time per iteration is a --log-interval mean"),
    "exp_manager.seconds_to_sleep": (ANY, "a pause at exit, not needed here"),
    "exp_manager.create_early_stopping_callback": ({False}, "no early stopping here"),
    "exp_manager.checkpoint_callback_params.monitor": ({"val_loss"}, "the best checkpoints are by validation loss"),
    "exp_manager.checkpoint_callback_params.mode": ({"min"}, "the best checkpoints have the lowest validation loss"),
    "exp_manager.checkpoint_callback_params.save_top_k": (ANY, "mapped"),
    "exp_manager.checkpoint_callback_params.save_last": (ANY, "the last checkpoint is always kept"),
    "exp_manager.checkpoint_callback_params.always_save_nemo": ({False}, "no .nemo files are written"),
    "exp_manager.checkpoint_callback_params.save_nemo_on_train_end": ({False}, "no .nemo files are written"),
    "exp_manager.checkpoint_callback_params.save_best_model": (ANY, "the 'best' file names the best checkpoint"),
    "exp_manager.checkpoint_callback_params.filename": (ANY, "checkpoints are named global_stepN here"),
    "exp_manager.checkpoint_callback_params.model_parallel_size": (ANY, "the layout is recorded in each checkpoint"),
}
ADAM_NAMES = ("fused_adam", "adam", "adamw")
PRECISIONS = {"16": "fp16", "16-mixed": "fp16", "bf16": "bf16", "bf16-mixed": "bf16", "32": "fp32", "32-true": "fp32"}


def split_argv(argv):
    """(Hydra overrides, {"path", "name"} of --config-path/--config-name, the other arguments)."""
    overrides, config, rest = [], {}, []
    tokens = iter(argv)
    for token in tokens:
        flag, _, value = token.partition("=")
        if flag in CONFIG_FLAGS:
            config[CONFIG_FLAGS[flag]] = value if value else next(tokens, "")
        elif not token.startswith("-") and OVERRIDE.match(token):
            overrides.append(token)
        else:
            rest.append(token)
    return overrides, config, rest


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


def _read_config(overrides, config):
    """The NeMo YAML (if named) with the overrides merged in, resolved, as {dotted key: value}."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    if not OmegaConf.has_resolver("multiply"):  # NeMo registers it for its configs' model_parallel_size
        OmegaConf.register_resolver("multiply", lambda x, y: x * y)
    base = OmegaConf.create()
    if config:
        if "name" not in config:
            raise ValueError("--config-path without --config-name: name the YAML file (without .yaml)")
        path = os.path.join(config.get("path", "."), config["name"])
        path = path if path.endswith((".yaml", ".yml")) else path + ".yaml"
        if not os.path.isfile(path):
            raise ValueError(f"--config-path/--config-name: no NeMo config at {path}")
        base = OmegaConf.load(path)
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist([override.lstrip("+") for override in overrides]))
        settings = OmegaConf.to_container(merged, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as error:
        raise ValueError(f"NeMo settings: {str(error).splitlines()[0]}") from None
    return dict(_leaves(settings))


def _check_accepted(settings, problems):
    for key, value in settings.items():
        if key in FLAGS or key in SWITCHES or value is None or value == "???":
            continue
        if key not in ACCEPTED:
            problems.append(f"{key}={value}: not a setting NeMo's GPT config has that is honoured here; "
                            "give our flag for it (--help) or leave it out")
            continue
        values, why = ACCEPTED[key]
        if values is not ANY and value not in values:
            allowed = " or ".join(str(v) for v in values if v is not None)
            problems.append(f"{key}={value}: only {allowed} here ({why})")


def _value_flags(flag, value):
    values = value if isinstance(value, list) else [value]
    return [flag] + [str(v) for v in values]


def _on_cpu():
    from deepspeed.accelerator import get_accelerator
    return get_accelerator().device_name() == "cpu"


def _precision_flags(settings, problems):
    precision = str(settings.get("trainer.precision", 32))
    kind = PRECISIONS.get(precision)
    o2 = settings.get("model.megatron_amp_O2") is True
    if kind is None:
        problems.append(f"trainer.precision={precision}: give 16, bf16 or 32 (16-mixed, bf16-mixed)")
        return []
    if kind == "fp16" and _on_cpu():
        problems.append(f"trainer.precision={precision} is fp16, which needs a GPU (DeepSpeed refuses it on a CPU): "
                        "give trainer.precision=bf16 here")
        return []
    if kind == "fp32" and o2:
        problems.append("model.megatron_amp_O2=True keeps half-precision weights: give trainer.precision=bf16 or 16")
    return {"fp16": ["--fp16"], "bf16": ["--bf16-weights" if o2 else "--bf16"], "fp32": []}[kind]


def _schedule_flags(settings, problems):
    name = settings.get("model.optim.sched.name")
    keys = [k for k in settings if k.startswith("model.optim.sched.") and settings[k] is not None]
    if name is None:
        return [] if keys == [] else _refused(problems, "model.optim.sched.name", None,
                                              "name the schedule (CosineAnnealing) with its settings")
    if name != "CosineAnnealing":
        return _refused(problems, "model.optim.sched.name", name, "CosineAnnealing is the schedule built here "
                        "(or our --lr-decay-style)")
    max_steps = settings.get("model.optim.sched.max_steps") or settings.get("trainer.max_steps")
    if not isinstance(max_steps, int) or max_steps <= 0:
        return _refused(problems, "trainer.max_steps", max_steps, "CosineAnnealing needs the number of steps")
    constant = settings.get("model.optim.sched.constant_steps") or 0
    flags = ["--lr-decay-style", "cosine", "--lr-decay-iters", str(max_steps - constant)]
    warmup, ratio = settings.get("model.optim.sched.warmup_steps"), settings.get("model.optim.sched.warmup_ratio")
    if warmup is not None and ratio is not None:
        return _refused(problems, "model.optim.sched.warmup_ratio", ratio, "give warmup_steps or warmup_ratio")
    warmup = int(ratio * max_steps) if ratio is not None else warmup
    return flags + ["--lr-warmup-iters", str(warmup or 0)]


def _refused(problems, key, value, why):
    problems.append(f"{key}={value}: {why}")
    return []


def _optimizer_flags(settings, problems):
    name = settings.get("model.optim.name")
    flags = []
    if name == "distributed_fused_adam":
        flags = ["--use-distributed-optimizer"]
    elif name is not None and name not in ADAM_NAMES:
        return _refused(problems, "model.optim.name", name, "fused_adam, adam, adamw (AdamW) or distributed_fused_adam "
                        "(ZeRO-1) here; other optimizers: our --optimizer")
    betas = settings.get("model.optim.betas")
    if betas is not None:
        if not (isinstance(betas, list) and len(betas) == 2):
            return _refused(problems, "model.optim.betas", betas, "two values, [beta1,beta2]")
        flags += ["--adam-beta1", str(betas[0]), "--adam-beta2", str(betas[1])]
    return flags


def _trainer_flags(settings, problems, world_size):
    flags = []
    devices, nodes = settings.get("trainer.devices"), settings.get("trainer.num_nodes") or 1
    if isinstance(devices, int) and devices > 0 and devices * nodes != world_size:
        problems.append(f"trainer.devices={devices} x trainer.num_nodes={nodes} is {devices * nodes} processes but "
                        f"the launcher started {world_size}: start that many (deepspeed --num_gpus, torchrun "
                        "--nproc_per_node, srun -n) or give the numbers it started")
    interval = settings.get("trainer.val_check_interval")
    if interval is not None:
        if not isinstance(interval, int) or isinstance(interval, bool):
            return _refused(problems, "trainer.val_check_interval", interval, "a number of steps here (an epoch's "
                            "fraction needs epochs, which are not counted)")
        flags += ["--eval-interval", str(interval)]
    limits = {settings.get(f"trainer.limit_{part}_batches") for part in ("val", "test")} - {None}
    if len(limits) > 1:
        problems.append(f"trainer.limit_val_batches and trainer.limit_test_batches differ ({sorted(limits)}): "
                        "validation and test take the same --eval-iters here")
    elif limits:
        (limit,) = limits
        if not isinstance(limit, int) or isinstance(limit, bool):
            return _refused(problems, "trainer.limit_val_batches", limit, "a number of batches here")
        flags += ["--eval-iters", str(limit)]
    epochs, steps = settings.get("trainer.max_epochs"), settings.get("trainer.max_steps")
    if epochs not in (None, -1) and not (isinstance(steps, int) and steps > 0):
        problems.append(f"trainer.max_epochs={epochs}: training is counted in steps here: give trainer.max_steps")
    return flags


def _experiment_flags(settings, problems):
    """Checkpoints, resumption, best checkpoints and loggers of exp_manager."""
    def get(key, default=None):
        value = settings.get(f"exp_manager.{key}")
        return default if value is None else value
    folder = get("explicit_log_dir") or os.path.join(get("exp_dir", "nemo_experiments"),
                                                     get("name", settings.get("name") or DEFAULT_EXPERIMENT))
    checkpoints = os.path.join(folder, "checkpoints")
    flags = []
    if get("create_checkpoint_callback", True):
        flags += ["--save", checkpoints]
        top_k = get("checkpoint_callback_params.save_top_k")
        if top_k is not None:
            if not isinstance(top_k, int) or top_k < 1:
                return _refused(problems, "exp_manager.checkpoint_callback_params.save_top_k", top_k,
                                "a number of best checkpoints to keep, at least 1 (the last one is always kept too)")
            flags += ["--save-best-k", str(top_k)]
    if get("resume_if_exists", False):
        if not get("resume_ignore_no_checkpoint", False) and not os.path.exists(os.path.join(checkpoints, "latest")):
            problems.append(f"exp_manager.resume_if_exists=True with resume_ignore_no_checkpoint=False but there is no "
                            f"checkpoint in {checkpoints}: set resume_ignore_no_checkpoint=True to start afresh")
        flags += ["--load", checkpoints]
    if get("create_tensorboard_logger", True):
        flags += ["--tensorboard-dir", folder]
    if get("create_wandb_logger", False):
        flags += ["--wandb-project", get("wandb_logger_kwargs.project") or get("name", DEFAULT_EXPERIMENT),
                  "--wandb-dir", folder] + (["--wandb-name", get("wandb_logger_kwargs.name")]
                                            if get("wandb_logger_kwargs.name") else [])
    if get("create_mlflow_logger", False):
        flags += ["--mlflow-tracking-uri", get("mlflow_logger_kwargs.tracking_uri") or os.path.join(folder, "mlruns"),
                  "--mlflow-experiment", get("mlflow_logger_kwargs.experiment_name") or get("name", DEFAULT_EXPERIMENT)]
        flags += ["--mlflow-run-name", get("mlflow_logger_kwargs.run_name")] if get("mlflow_logger_kwargs.run_name") else []
    return flags


def _model_checks(settings, problems):
    sequence, data_sequence = settings.get("model.encoder_seq_length"), settings.get("model.data.seq_length")
    if sequence is not None and data_sequence is not None and sequence != data_sequence:
        problems.append(f"model.data.seq_length={data_sequence} but model.encoder_seq_length={sequence}: one "
                        "sequence length here")
    flags = ["--seq-length", str(data_sequence)] if sequence is None and data_sequence is not None else []
    channels, hidden, heads = (settings.get(f"model.{k}") for k in ("kv_channels", "hidden_size", "num_attention_heads"))
    if channels is not None and hidden and heads and channels * heads != hidden:
        problems.append(f"model.kv_channels={channels}: heads of hidden_size / num_attention_heads "
                        f"({hidden // heads}) channels only here")
    return flags


def nemo_flags(argv, world_size):
    """(our argv: the NeMo settings as flags, then the other arguments; problems, one line each). argv
    without NeMo settings comes back as it was."""
    overrides, config, rest = split_argv(argv)
    if not overrides and not config:
        return list(argv), []
    problems = []
    try:
        settings = _read_config(overrides, config)
    except ValueError as error:
        return rest, [str(error)]
    _check_accepted(settings, problems)
    flags = []
    for key, value in settings.items():
        if value is None or value == "???":
            continue
        if key in FLAGS:
            flags += _value_flags(FLAGS[key], value)
        elif key in SWITCHES and value is True:
            flags.append(SWITCHES[key])
    missing = [key for key, value in settings.items() if value == "???"]
    problems += [f"{key}: NeMo's config leaves it to be given (???): give {key}=..." for key in missing]
    flags += (_precision_flags(settings, problems) + _schedule_flags(settings, problems)
              + _optimizer_flags(settings, problems) + _trainer_flags(settings, problems, world_size)
              + _experiment_flags(settings, problems) + _model_checks(settings, problems))
    if "model.activation" not in settings and "--activation" not in rest:
        flags += ["--activation", "gelu"]  # NeMo's GPT default: erf GeLU, where ours is GPT-2's tanh form
    return flags + rest, problems
