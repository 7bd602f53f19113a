"""Generate text from a GPT-2 checkpoint: greedy, or sampled with temperature, top-k and top-p, using a
key-value cache so that each new token runs one position through the model.

    python generate_samples.py --load CKPT_DIR --greedy --out-seq-length 64        # prompts typed at the terminal
    python generate_samples.py --load CKPT_DIR --top_p 0.9 --temperature 0.8 --num-samples 4 \\
        --sample-input-file prompts.txt --sample-output-file samples.jsonl --out-seq-length 128
    deepspeed --num_gpus 2 generate_samples.py --load CKPT_DIR --model-parallel-size 2 ...

Prompts come one per line from --sample-input-file, or from the terminal (Ctrl-D ends); an empty
prompt generates unconditionally, from an end-of-document token. A sample ends at end-of-document or
after --out-seq-length tokens. With --sample-output-file each sample is one JSON line
{"prompt": ..., "text": ..., "tokens": [generated ids]}; without it the prompt and text are printed,
each sample followed by a line of dashes. A character whose bytes the last tokens only begin is left
out of the text (the tokens keep it). The model's
shape and tokenizer are read from the checkpoint (see inference.py).
"""

import json
import os
import sys

import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator

from arguments import add_generation_args, get_args
from inference import load_gpt2
from initialize import UsageError, print_rank_0, run_or_exit
from model.generation import generate

SAMPLE_SEPARATOR = "-" * 80  # printed after each sample, so samples of piped prompts stay apart


def check_generation_args(args):
    if args.greedy and (args.top_k or args.top_p):
        raise UsageError("--greedy takes the most likely token; it excludes --top_k and --top_p")
    if args.temperature <= 0:
        raise UsageError(f"--temperature {args.temperature} must be positive (for greedy decoding use --greedy)")
    if not 0 <= args.top_p <= 1 or args.top_k < 0:
        raise UsageError(f"--top_k {args.top_k} must be >= 0 and --top_p {args.top_p} between 0 and 1")
    if args.num_samples < 1 or args.out_seq_length < 1:
        raise UsageError("--num-samples and --out-seq-length must be at least 1")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != args.model_parallel_size:
        raise UsageError(f"generation runs on one tensor-parallel group: start {args.model_parallel_size} "
                         f"process(es) (--model-parallel-size), not {world}")


def _terminal_prompts():
    """Lines typed on rank 0, sent to every rank; None ends."""
    while True:
        line = [None]
        if dist.get_rank() == 0:
            try:
                line[0] = input("prompt (empty: unconditional; Ctrl-D: quit) >>> " if sys.stdin.isatty() else "")
            except EOFError:
                pass
        dist.broadcast_object_list(line, src=0)
        if line[0] is None:
            return
        yield line[0]


def prompts(args):
    if args.sample_input_file is None:
        yield from _terminal_prompts()
        return
    with open(args.sample_input_file, encoding="utf-8") as f:
        for line in f:
            yield line.rstrip("\n")


def samples_for(prompt, args, model, tokenizer, generator):
    """--num-samples samples continuing one prompt, as {"prompt", "text", "tokens"}."""
    eod = getattr(tokenizer, "eod", None)
    context = tokenizer.tokenize(prompt) if prompt else [eod]
    if context == [None]:
        raise UsageError(f"{tokenizer.name} has no end-of-document token to generate unconditionally from")
    room = model.max_sequence_length - 1
    if len(context) > room:
        print_rank_0(f"warning: the prompt has {len(context)} tokens; its last {room} are used")
        context = context[-room:]
    rows = torch.tensor([context] * args.num_samples, dtype=torch.long, device=get_accelerator().current_device_name())
    generated = generate(model, rows, args.out_seq_length, tokenizer.vocab_size, eod=eod, use_cache=args.kv_cache,
                         greedy=args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         generator=generator)
    return [{"prompt": prompt, "text": tokenizer.detokenize_prefix(ids), "tokens": ids} for ids in generated]


def generate_samples(args):
    check_generation_args(args)
    model, tokenizer = load_gpt2(args)
    generator = torch.Generator(device=get_accelerator().current_device_name()).manual_seed(args.seed)
    writing = args.sample_output_file is not None and dist.get_rank() == 0
    out = open(args.sample_output_file, "w", encoding="utf-8") if writing else None
    samples = []
    try:
        for prompt in prompts(args):
            for sample in samples_for(prompt, args, model, tokenizer, generator):
                samples.append(sample)
                if out:
                    out.write(json.dumps(sample, ensure_ascii=False) + "\n")
                    out.flush()
                else:
                    print_rank_0(prompt + sample["text"] + "\n" + SAMPLE_SEPARATOR)
    finally:
        if out:
            out.close()
    if writing:
        print(f"wrote {len(samples)} samples to {args.sample_output_file}")
    return samples


def main(argv=None):
    return run_or_exit(generate_samples, get_args(argv, description=__doc__, extra_args=add_generation_args))


if __name__ == "__main__":
    main()
