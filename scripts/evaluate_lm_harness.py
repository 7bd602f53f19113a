"""Score a GPT-2 checkpoint with EleutherAI's lm-evaluation-harness (lm-eval 0.4): any of its tasks,
or tasks of your own, through our model (tasks/lm_harness.py), at any tensor-parallel size.

    python scripts/evaluate_lm_harness.py --load CKPT_DIR --tasks lambada_openai,hellaswag,piqa
    python scripts/evaluate_lm_harness.py --load HF_GPT2_DIR --tasks my_task --include-path my_tasks/ \\
        --num-fewshot 5 --limit 100 --batch-size 16 --output-path results.json
    deepspeed --num_gpus 2 scripts/evaluate_lm_harness.py --load CKPT_DIR --model-parallel-size 2 --tasks ...

--load is a checkpoint of any layout training or scripts/convert_checkpoint.py wrote, or a transformers
folder; the model's shape and tokenizer come from it (inference.py). lm-eval's own tasks fetch their
data from the Hugging Face Hub (or its cache, HF_DATASETS_CACHE); a task of your own can read local
files (`dataset_path: json` with `dataset_kwargs: {data_files: {test: FILE}}`, README). Processes beyond
--model-parallel-size split the documents between data-parallel groups. The first rank prints lm-eval's
table and writes its results to --output-path.
"""

import json
import os
import sys

import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from arguments import add_lm_harness_args, get_args  # noqa: E402
from inference import load_gpt2  # noqa: E402
from initialize import UsageError, run_or_exit  # noqa: E402


def _limit(limit):
    if limit is None or limit < 1:
        return limit
    if limit != int(limit):
        raise UsageError(f"--limit {limit}: a number of documents (whole) or a fraction below 1")
    return int(limit)


def _tasks(args):
    """(task names, lm-eval's TaskManager). Indexing lm-eval's own tasks takes seconds, so when every name
    is one of --include-path's, that folder alone is indexed."""
    from lm_eval.tasks import TaskManager
    if args.include_path and not os.path.isdir(args.include_path):
        raise UsageError(f"--include-path {args.include_path}: no such folder of task YAML files")
    names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    if args.include_path:
        task_manager = TaskManager(include_path=args.include_path, include_defaults=False)
        if names and all(name in task_manager.all_tasks for name in names):
            return names, task_manager
    task_manager = TaskManager(include_path=args.include_path)
    unknown = [name for name in names if name not in task_manager.all_tasks]
    if unknown or not names:
        where = f" or in {args.include_path}" if args.include_path else " (add --include-path DIR for your own)"
        raise UsageError(f"--tasks {args.tasks}: no lm-eval task or group named {', '.join(unknown) or '(none)'}"
                         f"{where}; `lm-eval ls tasks` lists them")
    return names, task_manager


def evaluate(args):
    from lm_eval import simple_evaluate
    from lm_eval.utils import handle_non_serializable, make_table

    from tasks.lm_harness import HarnessModel
    names, task_manager = _tasks(args)
    model, tokenizer = load_gpt2(args)
    results = simple_evaluate(model=HarnessModel(model, tokenizer, args.batch_size, args.max_gen_toks), tasks=names,
                              num_fewshot=args.num_fewshot, limit=_limit(args.limit), task_manager=task_manager,
                              log_samples=args.log_samples)
    if dist.get_rank() != 0:
        return results
    print(make_table(results))
    if "groups" in results:
        print(make_table(results, "groups"))
    if args.output_path:
        with open(args.output_path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, default=handle_non_serializable, ensure_ascii=False)
        print(f"wrote lm-eval's results to {args.output_path}")
    return results


def main(argv=None):
    return run_or_exit(evaluate, get_args(argv, description=__doc__, extra_args=add_lm_harness_args))


if __name__ == "__main__":
    main()
