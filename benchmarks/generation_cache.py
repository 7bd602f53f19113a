"""Generation speed with and without the key-value cache, on a randomly initialised GPT-2 of a preset
size (the cache's effect does not depend on the weights).

    python benchmarks/generation_cache.py [--model-size gpt2-124m] [--prompt-tokens 64] [--new-tokens 256]
        [--batch-size 1] [--bf16]

One line per mode gives new tokens per second and milliseconds per token; the last line the speed-up
and whether both modes chose the same tokens (greedy decoding).
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mpu  # noqa: E402
from arguments import MODEL_SIZES  # noqa: E402
from initialize import initialize_distributed  # noqa: E402
from model import GPT2Model  # noqa: E402
from model.generation import generate  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", choices=MODEL_SIZES, default="gpt2-124m")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args(argv)
    initialize_distributed(argparse.Namespace(local_rank=None, distributed_backend=None, model_parallel_size=1))
    from deepspeed.accelerator import get_accelerator
    device = get_accelerator().current_device_name()
    layers, hidden, heads = MODEL_SIZES[args.model_size]
    torch.manual_seed(0)
    model = GPT2Model(layers, 50304, hidden, heads, args.prompt_tokens + args.new_tokens, embedding_dropout=0.0,
                      attention_dropout=0.0, hidden_dropout=0.0, parallel_output=False)
    model = model.to(device=device, dtype=torch.bfloat16 if args.bf16 else torch.float32).eval()
    prompt = torch.randint(0, 50257, (args.batch_size, args.prompt_tokens), device=device)
    print(f"{args.model_size} ({layers} layers, hidden {hidden}), {device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, "
          f"{'bf16' if args.bf16 else 'fp32'}")
    results = {}
    for use_cache in (True, False):
        generate(model, prompt, 4, 50257, use_cache=use_cache, greedy=True)  # warm-up
        get_accelerator().synchronize()
        start = time.perf_counter()
        results[use_cache] = generate(model, prompt, args.new_tokens, 50257, use_cache=use_cache, greedy=True)
        get_accelerator().synchronize()
        seconds = time.perf_counter() - start
        results[use_cache, "s"] = seconds
        count = args.new_tokens * args.batch_size
        print(f"{'with the cache' if use_cache else 'without cache '} | {count / seconds:9.1f} tokens/s | "
              f"{1000 * seconds / args.new_tokens:8.2f} ms per step")
    print(f"speed-up {results[False, 's'] / results[True, 's']:.1f}x | same tokens: {results[True] == results[False]}")
    mpu.destroy_model_parallel()


if __name__ == "__main__":
    main()
