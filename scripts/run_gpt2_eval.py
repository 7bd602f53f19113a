"""Zero-shot evaluation of a GPT-2 checkpoint: wikitext perplexity (default), LAMBADA cloze accuracy
(--cloze-eval) or large-corpus perplexity (--webtext-eval).

    python scripts/run_gpt2_eval.py --load CKPT_DIR --data-path wiki.test.tokens --overlapping-eval 32
    python scripts/run_gpt2_eval.py --load CKPT_DIR --data-path lambada_test.jsonl --cloze-eval [--strict-lambada]
    python scripts/run_gpt2_eval.py --model-path HF_GPT2_DIR --data-path wiki.test.tokens   # a transformers folder
    deepspeed --num_gpus 2 scripts/run_gpt2_eval.py --load CKPT_DIR --model-parallel-size 2 --data-path ...

The model's shape and tokenizer are read from the checkpoint (any ZeRO stage, any tensor-parallel
size) or the transformers folder; shape flags given (Megatron-LM v0's command lines carry them) must
agree with it, tokenizer flags override it; --seq-length defaults to the model's positions. One summary
line is printed:

    wikitext | loss X | ppl Y | adjusted ppl Z | tokens N | words M
    lambada | accuracy A | correct C | total T
    webtext | loss X | ppl Y | tokens N

and written as JSON to --output-file if given. wikitext's adjusted ppl spreads the summed loss over the
file's word-level tokens instead of its BPE tokens (tasks/wikitext.py), as published GPT-2 figures do.
"""

import json
import math
import os
import sys

import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from arguments import add_evaluation_args, get_args  # noqa: E402
from data_utils.lazy_loader import MalformedJsonError  # noqa: E402
from inference import load_gpt2  # noqa: E402
from initialize import UsageError, print_rank_0, run_or_exit  # noqa: E402
from tasks.corpus import corpus_tokens  # noqa: E402
from tasks.lambada import cloze_sample, cloze_window, read_passages  # noqa: E402
from tasks.scoring import score  # noqa: E402
from tasks.wikitext import adjusted_perplexity, evaluation_windows, wikitext_detokenize, word_count  # noqa: E402


def _perplexity(sums):
    loss = sums["loss"] / max(sums["targets"], 1)
    return loss, math.exp(min(loss, 700.0))


def wikitext(args, model, tokenizer, path):
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    tokens = tokenizer.tokenize(wikitext_detokenize(raw))
    sums = score(model, evaluation_windows(tokens, args.seq_length, args.overlapping_eval), args.batch_size,
                 tokenizer.vocab_size)
    loss, ppl = _perplexity(sums)
    words = word_count(raw)
    return {"task": "wikitext", "loss": loss, "ppl": ppl,
            "adjusted ppl": adjusted_perplexity(loss, len(tokens), words), "tokens": len(tokens), "words": words}


def lambada(args, model, tokenizer, path):
    windows = [cloze_window(*cloze_sample(text, tokenizer, args.strict_lambada), args.seq_length)
               for text in read_passages(path)]
    sums = score(model, windows, args.batch_size, tokenizer.vocab_size)
    return {"task": "lambada", "accuracy": sums["correct"] / max(sums["windows"], 1), "correct": sums["correct"],
            "total": sums["windows"]}


def webtext(args, model, tokenizer, path):
    tokens = corpus_tokens(path, tokenizer, args.eval_iters * args.batch_size * args.seq_length + 1, args.text_key)
    loss, ppl = _perplexity(score(model, evaluation_windows(tokens, args.seq_length), args.batch_size,
                                  tokenizer.vocab_size))
    return {"task": "webtext", "loss": loss, "ppl": ppl, "tokens": len(tokens)}


def summary_line(result):
    formats = {"loss": "{:.4f}", "ppl": "{:.3f}", "adjusted ppl": "{:.3f}", "accuracy": "{:.4f}"}
    return " | ".join([result["task"]] + [f"{name} {formats.get(name, '{}').format(value)}"
                                          for name, value in result.items() if name != "task"])


def evaluate(args):
    if not args.data_path or len(args.data_path) != 1:
        raise UsageError("--data-path takes the one file to evaluate on (wikitext .tokens, lambada_test.jsonl, "
                         "or for --webtext-eval a loose-JSON file or .bin/.idx prefix)")
    if args.strict_lambada and not args.cloze_eval:
        raise UsageError("--strict-lambada changes how --cloze-eval scores: add --cloze-eval")
    if args.model_path and args.load and args.model_path != args.load:
        raise UsageError("--model-path and --load name two models: give one")
    args.load = args.load or args.model_path
    model, tokenizer = load_gpt2(args)
    task = lambada if args.cloze_eval else webtext if args.webtext_eval else wikitext
    result = task(args, model, tokenizer, args.data_path[0])
    print_rank_0(summary_line(result))
    if args.output_file and dist.get_rank() == 0:
        with open(args.output_file, "w") as f:
            json.dump(result, f, indent=1)
    return result


def main(argv=None):
    return run_or_exit(evaluate, get_args(argv, description=__doc__, extra_args=add_evaluation_args), (MalformedJsonError,))


if __name__ == "__main__":
    main()
