"""The Hugging Face way in: models, tokenizers and datasets named as transformers and `datasets` name them
(transformers' run_clm_no_trainer, the llm-pytorch guide), resolved offline into this codebase's flags.

A model or tokenizer name is a transformers folder, or a Hub name found in the local Hugging Face cache
(HF_HUB_CACHE, by default ~/.cache/huggingface/hub, as `hf download NAME` fills it). GPT-2, GPT-Neo and
GPT-NeoX folders give the model's shape and architecture flags, the dropout of their config and their
tokenizer; --model-name-or-path also gives the weights, converted in memory and split for this run's
tensor-parallel size (model/hf_folder.py), unless --low_cpu_mem_usage or --config-name alone asks for
fresh weights. A dataset is a local dataset folder (`save_to_disk`, or data files `load_dataset` reads), a
Hub name found in the local cache (a snapshot, or `datasets`' own cache of an earlier load), or
--train-file/--validation-file (csv, json, txt); its texts are exported once into the data cache as
loose JSON, which training tokenizes into .bin/.idx as it does any corpus. The Hub is never reached:
snapshots are looked up with local_files_only, and `datasets` runs in offline mode.
"""

import contextlib
import hashlib
import json
import os

SHAPE_FLAGS = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "max_position_embeddings")
TOKENIZER_FLAGS = ("tokenizer_type", "vocab_file", "merge_file", "tokenizer_path", "tokenizer_model_type")
LR_SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant", "constant_with_warmup": "constant"}

# run_clm_no_trainer's flags with no meaning here, refused saying what holds instead.
REFUSED_HF_FLAGS = {
    "--push_to_hub": "nothing is uploaded from training: convert with scripts/convert_checkpoint.py --to-hf, then "
                     "`hf upload`",
    "--hub_model_id": "nothing is uploaded from training (scripts/convert_checkpoint.py --to-hf, then `hf upload`)",
    "--hub_token": "nothing is uploaded from training (scripts/convert_checkpoint.py --to-hf, then `hf upload`)",
    "--with_tracking": "scalars go to --tensorboard-dir, --wandb-project or --mlflow-tracking-uri",
    "--report_to": "scalars go to --tensorboard-dir, --wandb-project or --mlflow-tracking-uri",
    "--trust_remote_code": "no remote code runs here: GPT-2, GPT-Neo and GPT-NeoX configs convert",
    "--num_train_epochs": "training is counted in steps here: give --max_train_steps",
    "--preprocessing_num_workers": "the texts are tokenized once into the data cache (one process)",
    "--overwrite_cache": "delete the hf_* files and their .bin/.idx in the data cache (--data-cache-dir)",
    "--use_slow_tokenizer": "the tokenizer is the model folder's tokenizer.json or vocab.json + merges.txt",
    "--model_type": "the config.json's model_type decides (gpt2, gpt_neo, gpt_neox)",
}


class HubError(ValueError):
    """A name that resolves to nothing usable, or data that does not load: one line for the user. (The
    libraries this module uses are imported where needed: `import arguments` stays light.)"""


@contextlib.contextmanager
def _offline_datasets():
    """`datasets` (yielded) with it and huggingface_hub in offline mode for the calls inside: both read
    HF_HUB_OFFLINE when imported, so a process that imported them before (through transformers, say) would
    otherwise try the network first and wait for it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    from huggingface_hub import constants
    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield datasets
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def resolve_model_folder(name, flag):
    """The folder of a transformers model: `name` itself, or its snapshot in the local Hugging Face cache."""
    from model.hf_folder import is_hf_folder
    if os.path.isdir(name):
        if not is_hf_folder(name):
            raise HubError(f"{flag} {name}: the folder has no config.json (a transformers model folder has one)")
        return name
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    try:
        folder = snapshot_download(name, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError):
        raise HubError(f"{flag} {name}: not a folder, and not in the local Hugging Face cache ({constants.HF_HUB_CACHE}; "
                       f"HF_HUB_CACHE or HF_HOME move it); nothing is downloaded here: on a machine with network run "
                       f"`hf download {name}` and copy its cache folder models--{name.replace('/', '--')} into "
                       "this one, or pass a transformers model folder") from None
    if not is_hf_folder(folder):
        raise HubError(f"{flag} {name}: its cached snapshot {folder} has no config.json")
    return folder


def take_model_flags(args):
    """Apply --model-name-or-path / --config-name / --tokenizer-name to args (shape, architecture, dropout,
    tokenizer, --seq-length) and set args.hf_weights (None before) to the folder whose weights training
    starts from, if any. Returns problems, one line each."""
    source = args.config_name or args.model_name_or_path
    if source is None:
        return ["--tokenizer-name needs --model-name-or-path or --config-name"] if args.tokenizer_name else []
    if args.model_size:
        return [f"--model-size {args.model_size} and {source} both give the model's shape: give one"]
    from data_utils.hf_tokenizer import folder_tokenizer_flags
    from model.hf_folder import gpt_flags_from_hf, read_config
    try:
        folder = resolve_model_folder(source, "--config-name" if args.config_name else "--model-name-or-path")
        flags, _ = gpt_flags_from_hf(folder)
        if args.model_name_or_path and not args.low_cpu_mem_usage:
            args.hf_weights = resolve_model_folder(args.model_name_or_path, "--model-name-or-path")
        tokenizer_folder = resolve_model_folder(args.tokenizer_name, "--tokenizer-name") if args.tokenizer_name \
            else folder
        tokenizer_flags = folder_tokenizer_flags(tokenizer_folder, read_config(tokenizer_folder))
    except ValueError as error:
        return [str(error)]
    problems = []
    for name, value in flags.items():
        if name == "model_type":
            continue
        if name not in args.explicit:
            setattr(args, name, value)
        elif args.hf_weights and name in SHAPE_FLAGS and getattr(args, name) != value:
            problems.append(f"--{name.replace('_', '-')} {getattr(args, name)} but {source} has {value}: drop the flag "
                            "(the shape comes from the model) or add --low_cpu_mem_usage to start from fresh weights")
    if not any(name in args.explicit for name in TOKENIZER_FLAGS):
        for name, value in tokenizer_flags.items():
            setattr(args, name, value)
    if "seq_length" not in args.explicit:  # run_clm's --block_size default
        args.seq_length = min(1024, args.max_position_embeddings)
    return problems


def take_run_clm_flags(args):
    """run_clm_no_trainer's spellings with a meaning beyond a plain alias; returns problems."""
    problems = []
    if args.mixed_precision in ("fp16", "bf16"):
        setattr(args, args.mixed_precision, True)
        args.explicit.add(args.mixed_precision)
    if args.lr_scheduler_type:
        if args.lr_scheduler_type not in LR_SCHEDULERS:
            problems.append(f"--lr_scheduler_type {args.lr_scheduler_type}: {', '.join(LR_SCHEDULERS)} are built here "
                            "(--lr-decay-style)")
        else:
            args.lr_decay_style = LR_SCHEDULERS[args.lr_scheduler_type]
            if args.lr_scheduler_type == "constant" and "lr_warmup_iters" not in args.explicit:
                args.lr_warmup_iters = 0  # transformers' constant schedule has no warmup
    if args.per_device_eval_batch_size not in (None, args.batch_size):
        problems.append(f"--per_device_eval_batch_size {args.per_device_eval_batch_size}: evaluation runs at the "
                        f"training micro batch here ({args.batch_size}); give the same number or drop the flag")
    if args.resume_from_checkpoint is not None:
        problems += _resume_from(args)
    data_sources = [flag for flag, given in (("--dataset-name", args.dataset_name), ("--train-file", args.train_file),
                                             ("--data-path", args.data_path), ("--train-data", "train_data" in args.explicit))
                    if given]
    if len(data_sources) > 1:
        problems.append(f"{' and '.join(data_sources)} all name the training data: give one")
    if args.validation_file and not args.train_file:
        problems.append("--validation-file goes with --train-file")
    if args.dataset_config_name and not args.dataset_name:
        problems.append("--dataset-config-name goes with --dataset-name")
    return problems


def _resume_from(args):
    """--resume_from_checkpoint: alone, the latest checkpoint of --output_dir (--save); with a folder, that
    checkpoint directory's latest, or that tag folder of one."""
    path = args.resume_from_checkpoint
    if "load" in args.explicit:
        return ["--resume_from_checkpoint and --load both name the checkpoint to resume from: give one"]
    if not path:
        if not args.save:
            return ["--resume_from_checkpoint without a folder resumes from --output_dir (--save): give one of them"]
        args.load = args.save
    elif not os.path.isdir(path):
        return [f"--resume_from_checkpoint {path}: no such folder (alone, the flag resumes from --output_dir)"]
    elif os.path.isfile(os.path.join(path, "latest")) or \
            not os.path.basename(os.path.normpath(path)).startswith("global_step"):
        args.load = path
    else:
        args.load, args.load_tag = os.path.dirname(os.path.normpath(path)), os.path.basename(os.path.normpath(path))
    return []


def load_weights(model, args, tensor_parallel, rank):
    """args.hf_weights (a transformers folder) converted and split into this tensor rank's model, before
    DeepSpeed takes it."""
    from model.hf_folder import state_from_hf
    from model.tensor_parallel_state import split_state
    state, _, _ = state_from_hf(args.hf_weights, tensor_parallel, args.make_vocab_size_divisible_by)
    try:
        model.load_state_dict(split_state(state, tensor_parallel)[rank])
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1].strip()
        raise HubError(f"--model-name-or-path {args.model_name_or_path}: its weights do not fit the model the flags "
                       f"describe (a flag that contradicts its config, or another tokenizer?): {detail}") from None


# datasets

def _dataset_key(args):
    """A name for the exported files that changes when the data or the split does."""
    if args.dataset_name:
        what = [args.dataset_name, args.dataset_config_name]
    else:
        what = [(os.path.abspath(f), os.path.getsize(f), os.path.getmtime(f)) for f in
                (args.train_file, args.validation_file) if f]
    what.append(args.validation_split_percentage)
    digest = hashlib.sha256(json.dumps(what, default=str).encode()).hexdigest()[:12]
    readable = os.path.basename(os.path.normpath(args.dataset_name or args.train_file)).replace(".", "_")
    return f"hf_{readable}{'_' + args.dataset_config_name if args.dataset_config_name else ''}_{digest}"


def _load_named(name, config):
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    with _offline_datasets() as datasets:
        if os.path.isdir(name):
            saved = any(os.path.isfile(os.path.join(name, f)) for f in ("dataset_dict.json", "dataset_info.json"))
            return datasets.load_from_disk(name) if saved else datasets.load_dataset(name, config)
        try:
            return datasets.load_dataset(snapshot_download(name, repo_type="dataset", local_files_only=True), config)
        except (LocalEntryNotFoundError, HFValidationError):
            pass
        if os.path.isdir(os.path.join(datasets.config.HF_DATASETS_CACHE, name.replace("/", "___"))):
            return datasets.load_dataset(name, config)  # datasets' own cache of an earlier load
        raise HubError(f"--dataset-name {name}{' --dataset-config-name ' + config if config else ''}: not a folder, "
                       f"and not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) or datasets' cache "
                       f"({datasets.config.HF_DATASETS_CACHE}); nothing is downloaded here: on a machine with network "
                       f"run `hf download --repo-type dataset {name}` and copy its cache folder "
                       f"datasets--{name.replace('/', '--')} into this one, or save the dataset with save_to_disk and "
                       "pass that folder")


def _load_files(train_file, validation_file):
    files = {"train": train_file, **({"validation": validation_file} if validation_file else {})}
    extension = os.path.splitext(train_file)[1].lstrip(".")
    builder = {"txt": "text", "jsonl": "json"}.get(extension, extension)
    if builder not in ("text", "json", "csv"):
        raise HubError(f"--train-file {train_file}: a .csv, .json, .jsonl or .txt file (run_clm's formats)")
    with _offline_datasets() as datasets:
        try:
            return datasets.load_dataset(builder, data_files=files)
        except (FileNotFoundError, ValueError) as error:
            raise HubError(f"--train-file {train_file}: {error}") from None


def _texts(dataset):
    column = "text" if "text" in dataset.column_names else dataset.column_names[0]  # as run_clm takes it
    for batch in dataset.iter(batch_size=1000):
        for text in batch[column]:
            if isinstance(text, str) and text.strip():
                yield text


def _write_texts(path, texts):
    """One {"text": ...} line per text, streamed; the file appears whole (renamed once written)."""
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


def export_dataset(args, cache_dir):
    """--dataset-name or --train-file as loose JSON files in cache_dir (once: kept for later runs), then
    args.train_data and args.valid_data point at them (--split 100,0,0 unless given: the validation
    texts come from the dataset's validation split, else the first --validation-split-percentage % of
    its training split, as run_clm takes them)."""
    if not (args.dataset_name or args.train_file):
        return
    key = _dataset_key(args)
    train_path, valid_path = (os.path.join(cache_dir, f"{key}_{split}.json") for split in ("train", "validation"))
    if not os.path.isfile(train_path):
        loaded = _load_named(args.dataset_name, args.dataset_config_name) if args.dataset_name else \
            _load_files(args.train_file, args.validation_file)
        if "train" not in loaded:
            raise HubError(f"{args.dataset_name or args.train_file}: no train split (it has {', '.join(loaded)})")
        train, validation = loaded["train"], loaded.get("validation")
        if validation is None:
            held_out = len(train) * args.validation_split_percentage // 100
            train, validation = train.select(range(held_out, len(train))), train.select(range(held_out))
        os.makedirs(cache_dir, exist_ok=True)
        _write_texts(valid_path, _texts(validation))
        _write_texts(train_path, _texts(train))
    args.train_data = [train_path]
    args.valid_data = [valid_path] if os.path.getsize(valid_path) else None
    if "split" not in args.explicit:
        args.split = "100,0,0"
