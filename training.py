"""The one training loop, shared by every pretraining script.

An entry script hands `pretrain` three things: a model provider, a datasets provider and a forward
step. Everything else lives here once: distributed start-up, seeds, the DeepSpeed config and engine,
the loop with gradient accumulation, evaluation, logging (stdout and tensorboard), checkpoints,
resumption and clean exits.
"""

import itertools
import math
import os
import signal
import sys
import time
import typing

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from deepspeed.moe.utils import is_moe_param, split_params_into_different_moe_groups_for_optimizer

import mpu
from batches import batches, data_wait, micro_batches
from checkpointing import load_checkpoint, save_checkpoint, tags
from checkpointing.resume import check_save_folder, resume_position
from data_utils.corpora import REPO_DATA, resolve_corpus, tokenized_corpus
from data_utils.indexed_dataset import DatasetError, MMapIndexedDataset
from data_utils.lazy_loader import LooseJsonDataset, MalformedJsonError
from data_utils.tokenization import make_tokenizer_from_args
from deepspeed_config import ConfigError, build_ds_config
from deepspeed_internals import (
    DeepSpeedVersionError,
    guard_fp32_steps,
    precondition_gradients,
    release_engine,
    require_written_version,
    skip_one_rank_allreduce,
)
from hugging_face import HubError, export_dataset, load_weights
from initialize import (
    UsageError,
    collective_timeout,
    dropout_seed,
    initialize_distributed,
    print_rank_0,
    set_random_seed,
)
from kfac import KFAC, check_kfac_layout, kfac_cost_line
from learning_rates import megatron_scheduler
from memory_model import (
    MIB,
    describe,
    fitting_layouts,
    flags_for,
    layout_from_args,
    parse_bytes,
    peak_bytes,
    predicted_peak,
    resident_bytes,
    shape_from_args,
)
from model.moe import active_expert_parameters, is_moe
from model.normalization import NORMS, compute_layernorms_in_fp32
from model.transformer import ParallelTransformerLayer
from precision import emulated_bf16_warning
from stall_watch import mark, watching
from step_timing import StepParts
from trackers import open_trackers

NORM_TYPES = (torch.nn.LayerNorm, *NORMS.values())


def param_groups(model):
    """Weight decay on weight matrices and embeddings; none on biases and LayerNorm parameters."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            undecayed = isinstance(module, NORM_TYPES) or name == "bias" or name.endswith("rezero")
            (no_decay if undecayed else decay).append(param)
    groups = [{"params": decay, "name": "decay"}, {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    if is_moe(model):  # experts: their own data-parallel groups
        groups = split_params_into_different_moe_groups_for_optimizer(groups)
    return groups


def count_parameters(model):
    """Parameters of the whole model a token runs through: all tensor-parallel slices, ZeRO-3 partitions
    and pipeline stages (a tied weight counted once); of a mixture of experts, the top-k experts' (the
    FLOPs per token follow these)."""
    counts = [0, 0]  # tensor-parallel slices, replicated
    for p in model.parameters():
        if not getattr(p, "ds_pipe_replicated", False) and not is_moe_param(p):
            counts[not getattr(p, "tensor_model_parallel", False)] += getattr(p, "ds_numel", p.numel())
    total = torch.tensor(counts, dtype=torch.float64, device=get_accelerator().current_device_name())
    dist.all_reduce(total[:1], group=mpu.get_model_parallel_group())
    dist.all_reduce(total, group=mpu.get_pipeline_model_parallel_group())
    return int(total.sum().item()) + active_expert_parameters(model)


def _over_data_parallel(rows, per_rank=(0.0,)):
    """([{name: float}] averaged over the data-parallel group, [each data-parallel rank's `per_rank` numbers])
    from [{name: 0-dim tensor (left on the device) or float}]: one all-gather and one host read."""
    names, device = sorted(rows[0]) if rows else [], get_accelerator().current_device_name()
    table = torch.zeros(1 + len(rows), max(len(per_rank), len(names)), dtype=torch.float64, device=device)
    table[0, :len(per_rank)] = torch.tensor(per_rank, dtype=torch.float64)
    for i, row in enumerate(rows, start=1):
        table[i, :len(names)] = torch.stack([torch.as_tensor(row[name], dtype=torch.float64, device=device).reshape(())
                                             for name in names])
    gathered = [torch.empty_like(table) for _ in range(mpu.get_data_parallel_world_size())]
    dist.all_gather(gathered, table, group=mpu.get_data_parallel_group())
    every_rank = torch.stack(gathered)
    ranks = every_rank[:, 0, :len(per_rank)].flatten()
    read = torch.cat([ranks, every_rank[:, 1:, :len(names)].mean(0).flatten()]).tolist()  # one host read
    numbers, values = read[:len(ranks)], read[len(ranks):]
    return ([dict(zip(names, values[i:i + len(names)])) for i in range(0, len(values), max(1, len(names)))],
            [numbers[r:r + len(per_rank)] for r in range(0, len(numbers), len(per_rank))])


def _parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _deepspeed_runner():
    """(the `deepspeed` command's pid, its launch.py's pid) when this rank runs under DeepSpeed's launcher
    on this node (deepspeed -> launch.py -> rank), else None. A SIGTERM to the `deepspeed` command alone
    ends it without passing the signal on, and launch.py's ranks would train on as orphans."""
    launch = os.getppid()
    try:
        with open(f"/proc/{launch}/cmdline", "rb") as f:
            if b"deepspeed.launcher.launch" not in f.read():
                return None
    except OSError:
        return None
    return _parent_of(launch), launch


class _StopSignal:
    """SIGTERM (schedulers send it before killing a job) or SIGINT (Ctrl-C) asks for a checkpoint and a
    clean exit; a second SIGINT stops at once; so does the end of the `deepspeed` command that launched
    this rank. The ranks agree on it every iteration over a CPU (gloo) group, so the check never waits
    for a GPU. Handlers are restored when training ends."""

    def __init__(self):
        self.received = None
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        self.runner = _deepspeed_runner()

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.received == "SIGINT":
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def anywhere(self):
        mark("stop agreement")
        if self.runner and self.received is None and _parent_of(self.runner[1]) != self.runner[0]:
            self.received = "the deepspeed launcher ended"
        flag = torch.tensor([int(self.received is not None)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag[0])

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def evaluate(steps, data_iterator, engine, args, iterations):
    """Mean logged values over `iterations` batches (a pipeline engine: iterations x
    --gradient-accumulation-steps micro-batches), each a token-weighted mean over the data-parallel ranks."""
    engine.eval()
    totals = {}
    with torch.no_grad():
        for _ in range(iterations):
            if isinstance(engine, deepspeed.PipelineEngine):
                values = {"lm loss": engine.eval_batch(data_iterator)}
            else:
                mark("evaluation")
                ((batch, loss_tokens),) = micro_batches(steps.get_batch, data_iterator, args, 1)
                _, values = steps.forward_step(batch, engine, args, loss_tokens)
            for name, value in values.items():
                totals[name] = totals.get(name, 0.0) + value / iterations
    engine.train()
    return _over_data_parallel([totals])[0][0]


def _evaluate_and_report(label, dataset, steps, engine, args, iteration, trackers):
    """Evaluate on the first --eval-iters batches of `dataset` (the same batches every time) and print
    one line, with the time it took (kept out of the training time per iteration); returns the lm loss
    (None without data to evaluate)."""
    if dataset is None or args.eval_iters <= 0:
        return None
    started = time.time()
    values = evaluate(steps, batches(dataset, args, steps.get_batch), engine, args, args.eval_iters)
    parts = []
    for name, value in values.items():
        parts.append(f"{name} value: {value:.6E}")
        if name == "lm loss":
            parts.append(f"lm loss PPL: {math.exp(min(20.0, value)):.6E}")
    trackers.log({f"{label}/{name}": value for name, value in values.items()}, iteration)
    line = (f" {label} loss at {'iteration ' + str(iteration) if label == 'validation' else 'the end'} | "
            + " | ".join(parts) + f" | time (ms): {(time.time() - started) * 1000:.1f} |")
    print_rank_0("-" * len(line) + "\n" + line + "\n" + "-" * len(line))
    return values["lm loss"]


def _training_corpora(args):
    return [resolve_corpus(name, args.text_key) for name in args.train_data or ["sample"]]


def _data_cache_dir(args):
    return args.data_cache_dir or os.path.join(REPO_DATA, "cache")


def _tokenizer_training_texts(args):
    """What a missing SentencePiece model is trained on: --train-data (default: the bundled sample).
    Without --tokenizer-path the model is cached as {data cache}/{corpora}_spm_{vocab size}.model."""
    corpora = _training_corpora(args)
    if args.tokenizer_path is None:
        name = "_".join(corpus.name for corpus in corpora)
        args.tokenizer_path = os.path.join(_data_cache_dir(args), f"{name}_spm_{args.vocab_size}.model")
    if not os.path.isfile(args.tokenizer_path):
        print_rank_0(f"> training a SentencePiece model ({args.vocab_size} pieces) on "
                     f"{', '.join(corpus.path for corpus in corpora)}; it is saved as {args.tokenizer_path} and "
                     "reused by later runs (--tokenizer-path)")
    return itertools.chain.from_iterable(LooseJsonDataset(corpus.path, corpus.text_key, cache_dir=_data_cache_dir(args))
                                         for corpus in corpora)


def data_prefixes(args, tokenizer, append_eod=True, sentences=None):
    """The .bin/.idx prefixes to train on (with weights, as --data-path takes them): --data-path, else
    --train-data (default: the bundled sample) tokenized into the data cache on first use (see
    data_utils.corpora.tokenized_corpus for append_eod and sentences)."""
    return args.data_path or _in_proportion_to_tokens(
        [tokenized_corpus(corpus, tokenizer, _data_cache_dir(args), append_eod, sentences)
         for corpus in _training_corpora(args)])


def _in_proportion_to_tokens(prefixes):
    """--data-path values that draw each prefix in proportion to its tokens: the mix of their
    concatenation (Megatron-LM v0 concatenated several --train-data corpora)."""
    if len(prefixes) == 1:
        return prefixes
    return [value for prefix in prefixes for value in (str(int(MMapIndexedDataset(prefix).sizes.sum())), prefix)]


def _evaluation_prefixes(sources, args, tokenizer, append_eod, sentences):
    """--valid-data / --test-data values: .bin/.idx prefixes as they are, corpora and files tokenized."""
    prefixes = [source if os.path.isfile(source + ".idx") else
                tokenized_corpus(resolve_corpus(source, args.text_key), tokenizer, _data_cache_dir(args), append_eod,
                                 sentences) for source in sources]
    return _in_proportion_to_tokens(prefixes)


def build_splits(args, tokenizer, num_samples, build, append_eod=True, sentences=None):
    """(train, valid, test) datasets: the training data (data_prefixes) split by --split, with whole
    --valid-data / --test-data sources in place of their splits (the training data is split all the
    same). build(data path, split, (train, valid, test) samples) makes the three datasets."""
    own_data = data_prefixes(args, tokenizer, append_eod, sentences)
    replacing = (None, args.valid_data, args.test_data)
    datasets = list(build(own_data, args.split, [0 if sources else n for n, sources in zip(num_samples, replacing)]))
    for s, sources in enumerate(replacing):
        if sources and num_samples[s]:
            only = [num_samples[i] if i == s else 0 for i in range(3)]
            whole = ",".join("1" if i == s else "0" for i in range(3))
            datasets[s] = build(_evaluation_prefixes(sources, args, tokenizer, append_eod, sentences), whole, only)[s]
    return datasets


class EntrySteps(typing.NamedTuple):
    """What an entry script does per micro-batch (see batches.py for loss_tokens):

    get_batch(data_iterator, args) -> (batch, number of loss-bearing tokens in it), on every tensor-parallel
        rank; with a pipeline form the batch begins with (inputs, labels tuple), as the PipelineModule takes them
    forward_step(batch, model, args, loss_tokens) -> (loss to backpropagate, {name: value to log: a detached
        0-dim tensor, left on the device (the loop reads them once per log interval), or a float})
    has_pipeline_form: the model provider builds a PipelineModule with --pipe-parallel-size > 1; the
        pipeline engine runs its loss on (logits, (*labels, loss_tokens)) and logs it as "lm loss"
    """
    get_batch: typing.Callable
    forward_step: typing.Callable
    has_pipeline_form: bool = False


def pretrain(args, datasets_provider, model_provider, steps):
    """Train as the flags say; returns {iteration: {name: value}}: the training losses and the learning
    rate of the engine's optimizer after that iteration's step.

    model_provider(args, tokenizer) -> torch.nn.Module (a deepspeed PipelineModule with --pipe-parallel-size > 1)
    datasets_provider(args, tokenizer, num_samples) -> (train, valid, test) datasets (None: no split)
    steps: EntrySteps
    """
    try:
        return _pretrain(args, datasets_provider, model_provider, steps)
    except (UsageError, ConfigError, DatasetError, MalformedJsonError, FileNotFoundError,
            DeepSpeedVersionError, HubError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


def _setup(args, datasets_provider, model_provider, has_pipeline_form):
    pipelined = args.pipe_parallel_size > 1
    if pipelined and not has_pipeline_form:
        raise UsageError(f"--pipe-parallel-size {args.pipe_parallel_size}: {os.path.basename(sys.argv[0])} has no "
                         "pipeline form of its model (pretrain_gpt2.py has)")
    require_written_version()
    initialize_distributed(args)
    check_save_folder(args)
    set_random_seed(args.seed)
    dp = mpu.get_data_parallel_world_size()
    ds_config = build_ds_config(args, dp)
    if dist.get_rank() == 0:  # one rank measures and says it (on its own generator: every rank's draws stay alike)
        warning = emulated_bf16_warning(args.bf16, get_accelerator().device_name() == "cpu")
        if warning:
            print(warning, file=sys.stderr, flush=True)
    global_batch = args.batch_size * dp * args.gradient_accumulation_steps
    resumed_iteration, resumed_samples = resume_position(args)  # the data a resume reads on from
    train_samples = max(args.train_iters * global_batch,
                        resumed_samples + (args.train_iters - resumed_iteration) * global_batch)
    # every evaluation scores the same validation batches
    num_samples = (train_samples, args.eval_iters * global_batch, args.eval_iters * global_batch)
    tokenizer, datasets = _tokenizer_and_datasets(args, datasets_provider, num_samples)
    args.padded_vocab_size, args.text_vocab_size = tokenizer.padded_vocab_size, tokenizer.vocab_size
    document_flags = [f for f in ("eod_mask_loss", "reset_position_ids", "reset_attention_mask") if getattr(args, f)]
    if document_flags:
        try:
            args.eod = tokenizer.eod
        except AttributeError as error:
            raise UsageError(f"--{document_flags[0].replace('_', '-')}: {error}") from None
    args.zero_stage_of_run = ds_config["zero_optimization"]["stage"]
    problem = args.kfac and check_kfac_layout(args, args.zero_stage_of_run,
                                              ds_config["zero_optimization"].get("overlap_comm", False))
    if problem:
        raise UsageError(problem)
    start_from_hf = args.hf_weights and not resumed_iteration
    if start_from_hf and (pipelined or args.zero_stage_of_run == 3):
        raise UsageError(f"--model-name-or-path {args.model_name_or_path}: its weights load without pipeline stages "
                         "and below ZeRO-3 here; convert it with scripts/convert_checkpoint.py --from-hf and --load "
                         "the checkpoint, which any layout reads")
    args.predicted_memory = _predict_memory(args, dp, ds_config["zero_optimization"])
    if args.deepspeed_activation_checkpointing:
        deepspeed.checkpointing.configure(mpu, deepspeed_config=ds_config)
        mpu.set_checkpointing_implementation(deepspeed.checkpointing)
        mpu.model_parallel_cuda_manual_seed(dropout_seed(args.seed))
    # ZeRO-3 partitions each parameter over the data-parallel group (zero.Init takes the world by default,
    # which at TP > 1 mixed the tensor ranks' different slices: the losses left one process's)
    with deepspeed.zero.Init(config_dict_or_path=ds_config, mpu=mpu, data_parallel_group=mpu.get_data_parallel_group(),
                             enabled=ds_config["zero_optimization"]["stage"] == 3):
        model = model_provider(args, tokenizer)
    if start_from_hf:
        load_weights(model, args, mpu.get_model_parallel_world_size(), mpu.get_model_parallel_rank())
        print_rank_0(f"> starting from the weights of {args.hf_weights}")
    if args.fp32_layernorm:
        compute_layernorms_in_fp32(model)
    if args.compile:
        _compile_layers(model, ds_config["zero_optimization"]["stage"])
    groups, names = param_groups(model), {id(p): name for name, p in model.named_parameters()}
    # the names of the optimizer's parameters by position, for reading a ZeRO-0 checkpoint at another layout
    names_by_position = [[names[id(p)] for p in group["params"]] for group in groups]
    engine, _, _, _ = deepspeed.initialize(  # a PipelineModule brings its own grid (the same groups as mpu's)
        model=model, model_parameters=groups, config=ds_config, mpu=None if pipelined else mpu,
        lr_scheduler=None if "scheduler" in ds_config else megatron_scheduler(args))
    engine.optimizer_parameter_names = names_by_position
    skip_one_rank_allreduce(engine)
    if engine.zero_optimization_stage() == 0 and not (args.bf16_weights or args.fp16):
        guard_fp32_steps(engine)
    engine.preconditioner = KFAC(engine.module, args) if args.kfac else None
    if engine.preconditioner:
        print_rank_0(kfac_cost_line(engine.preconditioner))
        precondition_gradients(engine, engine.preconditioner)
    return engine, tokenizer, datasets, global_batch


_DATA_ERRORS = (UsageError, DatasetError, MalformedJsonError, FileNotFoundError, HubError)


def _predict_memory(args, data_parallel, zero_config):
    """One start-up line with this rank's predicted peak (memory_model.py; on a CPU the process's, its
    runtime measured now); a prediction over --device-memory (on a GPU, by default, its memory) stops the
    run here, before the model is built, naming the least changed layout that fits."""
    cpu = get_accelerator().device_name() == "cpu"
    shape, layout = shape_from_args(args, args.bert), layout_from_args(args, data_parallel, zero_config)
    runtime = resident_bytes() if cpu else 0
    parts = predicted_peak(shape, layout, "cpu" if cpu else "gpu", runtime)
    print_rank_0(f"> predicted peak memory per rank: {describe(parts)}; {layout.describe()}")
    limit = parse_bytes(args.device_memory) if args.device_memory else None if cpu else get_accelerator().total_memory()
    if limit is None or parts["total"] <= limit or args.no_memory_check:
        return parts
    fits = fitting_layouts(shape, layout, "cpu" if cpu else "gpu", limit, runtime)
    advice = (f"{flags_for(fits[0][0], layout, args.gradient_accumulation_steps)} is predicted at "
              f"{fits[0][1] / MIB:,.0f} MiB" if fits else "no ZeRO stage, activation checkpointing or micro batch at "
              "these parallel sizes fits: more tensor or pipeline parallelism (scripts/plan_layout.py)")
    raise UsageError(f"{layout.describe()} is predicted to peak at {parts['total'] / MIB:,.0f} MiB per rank, over the "
                     f"{limit / MIB:,.0f} MiB of --device-memory: {advice} (--no-memory-check runs it anyway)")


def _report_peak_memory(args):
    """After the first logged iterations from the second step on: the measured peak beside the prediction,
    the largest over ranks."""
    device = get_accelerator().device_name()
    peak = torch.tensor(float(peak_bytes(device)), dtype=torch.float64, device=get_accelerator().current_device_name())
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    what = "process peak resident memory" if device == "cpu" else "torch.cuda.max_memory_allocated"
    print_rank_0(f"> measured peak memory per rank: {peak.item() / MIB:,.0f} MiB ({what}, the largest rank), "
                 f"predicted {args.predicted_memory['total'] / MIB:,.0f} MiB")


def _tokenizer_and_datasets(args, datasets_provider, num_samples):
    """Rank 0 trains a tokenizer, tokenizes, builds index caches; the rest then read them. Bad data on
    rank 0 stops every rank with its one line (the others would wait for it at the barrier)."""
    failure = None
    for turn in ("first", "rest"):
        if (dist.get_rank() == 0) == (turn == "first"):
            try:
                export_dataset(args, _data_cache_dir(args))
                sentencepiece = args.tokenizer_type == "SentencePieceTokenizer"
                train_texts = _tokenizer_training_texts(args) if sentencepiece else None
                tokenizer = make_tokenizer_from_args(args, train_texts, model_parallel_size=args.model_parallel_size)
                datasets = datasets_provider(args, tokenizer, num_samples)
            except Exception as error:  # any failure: the other ranks must hear of it, not wait
                failure = error
        if turn == "first":
            shared = [None if failure is None else str(failure)]
            dist.broadcast_object_list(shared, src=0)
            if failure is not None and not isinstance(failure, _DATA_ERRORS):
                raise failure  # a defect: its traceback on rank 0, one line on the others
            if shared[0] is not None:
                raise UsageError(shared[0] if failure is not None else f"rank 0 failed building the data: {shared[0]}")
        dist.barrier()
    if failure is not None:
        raise failure
    return tokenizer, datasets


def _compile_layers(model, zero_stage):
    """torch.compile each transformer layer in place (names and state dicts unchanged)."""
    if zero_stage == 3:
        raise UsageError("--compile with ZeRO-3: its partitioned parameters are gathered by hooks that compiled "
                         "layers do not run here; use ZeRO-1/2, or leave out --compile")
    for module in model.modules():
        if isinstance(module, ParallelTransformerLayer):
            module.compile()


def _run_part(parts, part, call, *args):
    """call(*args) as `part` of the step: marked for the stall watch, timed when --timing-breakdown is on."""
    mark(part)
    return parts.run(part, call, *args) if parts else call(*args)


def _train_step(steps, train_iterator, engine, args, parts=None):
    """One iteration (--gradient-accumulation-steps micro-batches and an optimizer step): (this rank's
    logged values, on the device, grad norm or None). parts: a step_timing.StepParts timing each part."""
    if args.pipe_parallel_size > 1:  # the engine runs the micro-batches through the stages
        mark("pipeline")
        values = {"lm loss": engine.train_batch(train_iterator)}
    else:
        values, accumulation = {}, args.gradient_accumulation_steps
        mark("batch")
        for batch, loss_tokens in micro_batches(steps.get_batch, train_iterator, args, accumulation):
            if engine.preconditioner:  # output gradients of each token's own loss: those of the mean times this
                engine.preconditioner.output_gradient_scale = loss_tokens * accumulation
            loss, step_values = _run_part(parts, "forward+loss", steps.forward_step, batch, engine, args, loss_tokens)
            _run_part(parts, "backward", engine.backward, loss)
            _run_part(parts, "optimizer", engine.step)
            for name, value in step_values.items():
                values[name] = values.get(name, 0.0) + value / accumulation
    return values, engine.get_global_grad_norm()


class _LogWindow:
    """The iterations since the last log line: their values (left on the device until the window
    closes), learning rates and training time (evaluation and checkpoints excluded), and the part of it
    this rank waited for its own data. A window that starts at a resumed iteration holds fewer than
    --log-interval iterations and is averaged over those it holds."""

    def __init__(self):
        self.iterations, self.rows, self.rates, self.seconds, self.data_seconds = [], [], [], 0.0, 0.0
        self.ranks = [(0.0, 0.0)]

    def add(self, iteration, values, learning_rate, seconds, data_seconds):
        self.iterations.append(iteration)
        self.rows.append(values)
        self.rates.append(learning_rate)
        self.seconds += seconds
        self.data_seconds += data_seconds

    def close(self):
        """({iteration: {name: value averaged over the data-parallel ranks, "learning rate": rate}},
        {name: mean over the window}): one collective and one host synchronisation for the window, which
        also brings each data-parallel rank's (training seconds, data-wait seconds) into `ranks`."""
        rows, self.ranks = _over_data_parallel(self.rows, (self.seconds, self.data_seconds))
        history = {i: {**row, "learning rate": rate} for i, row, rate in zip(self.iterations, rows, self.rates)}
        means = {name: sum(row[name] for row in rows) / len(rows) for name in rows[0]} if rows else {}
        return history, means

    def stragglers(self):
        """{"step time", "data wait"}: (fastest, slowest data-parallel rank's ms per iteration, the slowest's
        rank) of each. Ranks wait for each other in the step's collectives, so their step times differ
        little; a rank's own data wait (before any collective) shows which one holds the others up."""
        spread = {}
        for column, name in enumerate(("step time", "data wait")):
            per_iteration = [1000 * numbers[column] / len(self.iterations) for numbers in self.ranks]
            slowest = max(range(len(per_iteration)), key=per_iteration.__getitem__)
            spread[name] = (min(per_iteration), per_iteration[slowest], slowest)
        return spread


def _precision_of(engine, args):
    if engine.torch_autocast_enabled():  # a ds_config "torch_autocast": fp32 weights, forward under autocast
        return f"fp32 weights, {str(engine.torch_autocast_dtype()).replace('torch.', '')} autocast"
    return "bf16 weights, fp32 master" if args.bf16_weights else "fp16" if args.fp16 else "fp32"


def _nothing_to_train(args, iteration, tag):
    return UsageError(f"--load {args.load}: checkpoint {tag} is at iteration {iteration}, which already reaches "
                      f"--train-iters {args.train_iters}: nothing to train. Raise --train-iters to train on, point "
                      "--save/--load at another folder to start a new run, or add --skip-train to only evaluate it")


def _too_many_skips(args, skipped, iteration, last_saved):
    return UsageError(f"{skipped} iterations in a row (up to {iteration}) had a non-finite loss or gradient norm "
                      f"and were skipped (--max-skipped-steps {args.max_skipped_steps}); stopping without saving, "
                      f"the last checkpoint ({last_saved or 'none'}) is as it was: lower --lr, look at the data of "
                      "these iterations, or resume from the checkpoint")


def _pretrain(args, datasets_provider, model_provider, steps):
    engine, _, data, global_batch = _setup(args, datasets_provider, model_provider,
                                           has_pipeline_form=steps.has_pipeline_form)
    try:
        return _train_and_evaluate(args, engine, data, global_batch, steps)
    finally:
        release_engine(engine)  # a process that trains again gets this run's memory back


def _train_and_evaluate(args, engine, data, global_batch, steps):
    train_data, valid_data, test_data = data
    parameters = count_parameters(engine.module)
    print_rank_0(f"> {parameters:,} parameters{' active per token' if is_moe(engine.module) else ''}; tensor parallel {mpu.get_model_parallel_world_size()}, pipeline "
                 f"parallel {mpu.get_pipeline_model_parallel_world_size()}, data parallel "
                 f"{mpu.get_data_parallel_world_size()}, global batch {global_batch}, ZeRO stage "
                 f"{engine.zero_optimization_stage()}, {_precision_of(engine, args)}, "
                 f"{get_accelerator().device_name()}")
    iteration, consumed, tag = load_checkpoint(engine, args) if args.load else (0, 0, None)
    if engine.preconditioner and tag and not args.finetune:
        engine.preconditioner.load(os.path.join(args.load, tag), iteration)
    if iteration >= args.train_iters and not args.skip_train:
        raise _nothing_to_train(args, iteration, tag)
    trackers = open_trackers(args, engine.config, dist.get_rank())
    try:
        if args.skip_train:
            history, stopped = {}, False
            _evaluate_and_report("validation", valid_data, steps, engine, args, iteration, trackers)
        else:
            history, stopped = _train(args, engine, steps, (train_data, valid_data), (iteration, consumed, tag),
                                      global_batch, parameters, trackers)
        if not stopped:
            _evaluate_and_report("test", test_data, steps, engine, args, max(history, default=iteration), trackers)
    finally:
        trackers.close()
    return history


def _committed_checkpoint(args):
    """What a stopped job leaves to resume from, for the stall watch's line."""
    tag = tags.read_latest(args.save) if args.save else None
    if tag is None:
        return "no checkpoint was committed" + ("" if args.save else " (no --save)")
    return f"the last committed checkpoint is {tag} in {args.save}: launch the job again to resume from it"


def _train(args, engine, steps, data, start, global_batch, parameters, trackers):
    """The loop from the resumed (iteration, consumed samples, tag) to --train-iters; returns (history,
    whether it stopped early at --exit-interval or a stop signal, after saving). Under the stall watch."""
    stop = _StopSignal()
    try:
        with watching(collective_timeout(args), lambda: _committed_checkpoint(args)):
            return _train_loop(args, engine, steps, data, start, global_batch, parameters, trackers, stop)
    finally:
        stop.restore()


def _train_loop(args, engine, steps, data, start, global_batch, parameters, trackers, stop):
    (train_data, valid_data), (iteration, consumed, resumed_tag) = data, start
    train_iterator = batches(train_data, args, steps.get_batch, consumed if args.resume_dataloader else 0)
    flops_per_token = 6 * parameters + 12 * args.num_layers * args.hidden_size * args.seq_length
    history, window, last_saved, skipped_in_a_row = {}, _LogWindow(), resumed_tag, 0
    steps_run, peak_reported = 0, False
    parts = StepParts() if args.timing_breakdown else None

    def save(validation_loss=None):
        mark("checkpoint")
        save_checkpoint(engine, args, iteration, consumed, protected=(resumed_tag,), also=engine.preconditioner,
                        validation_loss=validation_loss)
        return f"global_step{iteration}"
    while iteration < args.train_iters:
        mark("batch", iteration + 1)
        started, skipped_before, waited = time.time(), engine.skipped_steps, data_wait(train_iterator)
        values, norm = _train_step(steps, train_iterator, engine, args, parts)
        iteration, steps_run = iteration + 1, steps_run + 1
        skipped_in_a_row = skipped_in_a_row + 1 if engine.skipped_steps > skipped_before else 0
        if args.max_skipped_steps and skipped_in_a_row >= args.max_skipped_steps:
            raise _too_many_skips(args, skipped_in_a_row, iteration, last_saved)
        consumed += global_batch
        window.add(iteration, values, engine.get_lr()[0], time.time() - started, data_wait(train_iterator) - waited)
        if iteration % args.log_interval == 0:
            mark("log")
            logged, means = window.close()
            history.update(logged)
            _log_iteration(args, engine, iteration, consumed, (means, window), norm, global_batch, flops_per_token,
                           trackers, parts)
            if steps_run >= 2 and not peak_reported:  # the second step holds the optimizer's moments and
                _report_peak_memory(args)  # runs ZeRO-3's traced prefetch
                peak_reported = True
            window = _LogWindow()
        validation_loss = _evaluate_and_report("validation", valid_data, steps, engine, args, iteration, trackers) \
            if iteration % args.eval_interval == 0 else None
        at_exit_interval = bool(args.exit_interval) and iteration % args.exit_interval == 0
        stopping = stop.anywhere() or at_exit_interval
        if args.save and ((args.save_interval and iteration % args.save_interval == 0) or stopping or
                          (args.save_best_k and validation_loss is not None)):
            last_saved = save(validation_loss)
        if stopping:
            reason = stop.received or ("--exit-interval" if at_exit_interval else "a stop signal to another rank")
            print_rank_0(f"exiting at iteration {iteration} ({reason})")
            return {**history, **window.close()[0]}, True
    if args.save and last_saved != f"global_step{iteration}":
        save()
    return {**history, **window.close()[0]}, False


def _log_iteration(args, engine, iteration, consumed, closed_window, norm, global_batch, flops_per_token, trackers,
                   parts=None):
    means, window = closed_window
    elapsed = window.seconds / len(window.iterations)
    tokens_per_second = global_batch * args.seq_length / elapsed
    tflops = tokens_per_second * flops_per_token / dist.get_world_size() / 1e12
    learning_rate = engine.get_lr()[0]
    loss_scale = engine.optimizer.cur_scale if args.fp16 else 1.0
    scalars = {"learning rate": learning_rate, "loss scale": loss_scale, "tokens per second": tokens_per_second,
               "TFLOP/s per device": tflops, "consumed samples": consumed, **means}
    if norm is not None:
        scalars["grad norm"] = float(norm)
    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":  # the allocator's own count; a CPU has none
        scalars["peak memory (GiB)"] = accelerator.max_memory_allocated() / 2 ** 30
    shares = {f"{part} share": share for part, share in parts.shares(window.seconds).items()} if parts else {}
    scalars.update(shares)
    spread = window.stragglers() if len(window.ranks) > 1 else {}
    for name, (fastest, slowest, _) in spread.items():
        scalars.update({f"fastest rank {name} (ms)": fastest, f"slowest rank {name} (ms)": slowest})
    line = (f" iteration {iteration:8d}/{args.train_iters:8d} | consumed samples: {consumed:12d} | "
            f"elapsed time per iteration (ms): {elapsed * 1000:.1f} | learning rate: {learning_rate:.3E} | "
            + "".join(f"{name}: {value:.6E} | " for name, value in means.items())
            + f"loss scale: {loss_scale:.1f} | "
            + (f"grad norm: {float(norm):.3f} | " if norm is not None else "")
            + (f"number of skipped iterations: {engine.skipped_steps} | " if args.fp16 or engine.skipped_steps else "")
            + f"tokens per second: {tokens_per_second:.1f} | TFLOP/s per device: {tflops:.3f} |"
            + (f" peak memory (GiB): {scalars['peak memory (GiB)']:.2f} |" if "peak memory (GiB)" in scalars else "")
            + "".join(f" {name}: {share:.1%} |" for name, share in shares.items())
            + "".join(f" {name} over data-parallel ranks (ms): fastest {fastest:.1f}, slowest {slowest:.1f} (rank "
                      f"{rank}) |" for name, (fastest, slowest, rank) in spread.items()))
    print_rank_0(line)
    trackers.log(scalars, iteration)
