"""The Hugging Face way in (hugging_face.py): a transformers GPT-Neo folder starts training at transformers'
loss, the llm-pytorch guide's command line runs as written from a local Hugging Face cache (trains, saves,
resumes, logs), and what is missing or means nothing here is one line."""

import json
import os
import subprocess
import sys

import pytest
import torch
from launches import REPO, dry_run

from distributed import run_distributed
from gpt2_runs import expect_error, wrapped_steps

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def _tiny_gpt_neo():
    from transformers import GPTNeoConfig, GPTNeoForCausalLM
    torch.manual_seed(0)
    return GPTNeoForCausalLM(GPTNeoConfig(vocab_size=50257, max_position_embeddings=64, hidden_size=32, num_layers=2,
                                          num_heads=4, attention_types=[[["global", "local"], 1]], window_size=8,
                                          initializer_range=0.3)).eval()  # a loss far from log(vocabulary)


def _cached(hub, kind, name):
    """A snapshot folder of the Hugging Face cache layout (what `hf download` fills), committed as main."""
    root = hub / f"{kind}--{name.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(SNAPSHOT)
    snapshot = root / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True)
    return snapshot


@pytest.fixture(scope="module")
def hub(tmp_path_factory, sample_texts):
    """A local Hugging Face cache holding EleutherAI/gpt-neo-125m (a tiny model of that family under its name)
    and wikitext's wikitext-2-raw-v1 (the bundled corpus as its parquet files, its README's configs)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    hub = tmp_path_factory.mktemp("hf") / "hub"
    _tiny_gpt_neo().save_pretrained(_cached(hub, "models", "EleutherAI/gpt-neo-125m"))
    data = _cached(hub, "datasets", "wikitext")
    (data / "wikitext-2-raw-v1").mkdir()
    for split, texts in (("train", sample_texts[:400]), ("validation", sample_texts[400:440])):
        pq.write_table(pa.table({"text": texts}), data / "wikitext-2-raw-v1" / f"{split}-00000-of-00001.parquet")
    (data / "README.md").write_text("---\nconfigs:\n- config_name: wikitext-2-raw-v1\n  data_files:\n"
                                    "  - split: train\n    path: wikitext-2-raw-v1/train-*\n"
                                    "  - split: validation\n    path: wikitext-2-raw-v1/validation-*\n---\n")
    return hub


def _first_batch_and_loss(argv):
    """(inputs, labels) of the first micro-batch and the first iteration's logged loss."""
    import pretrain_gpt2
    seen = []

    def keep(get_batch):
        def kept(data_iterator, args):
            batch = get_batch(data_iterator, args)
            seen.append((batch[0][0].clone(), batch[0][1][0].clone()))
            return batch
        return kept
    with wrapped_steps(get_batch=keep):
        history = pretrain_gpt2.main(argv)
    return seen[0], history[1]["lm loss"]


def test_a_gpt_neo_folder_starts_training_at_transformers_loss(tmp_path, sample_texts):
    """--model_name_or_path FOLDER: the first iteration's loss (before any step) is transformers' loss of
    the same batch to 1e-4, on texts from --train_file (txt, one text a line)."""
    model = _tiny_gpt_neo()
    model.save_pretrained(tmp_path / "neo")
    (tmp_path / "train.txt").write_text("\n".join(text.replace("\n", " ") for text in sample_texts[:200]))
    argv = ["--model_name_or_path", str(tmp_path / "neo"), "--train_file", str(tmp_path / "train.txt"),
            "--block_size", "32", "--per_device_train_batch_size", "2", "--max_train_steps", "1", "--log-interval", "1",
            "--data-cache-dir", str(tmp_path / "cache"), "--num-workers", "0", "--eval-iters", "0"]
    (((inputs, labels), ours),) = run_distributed(1, _first_batch_and_loss, argv)
    with torch.no_grad():
        logits = model(inputs).logits
    theirs = float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1)))
    assert inputs.shape == (2, 32) and theirs > 11.5, theirs  # fresh weights would start near log(50257) = 10.8
    assert abs(ours - theirs) <= 1e-4 * theirs, (ours, theirs)


SEED_COMMAND = ("--low_cpu_mem_usage --dataset_name wikitext --dataset_config_name wikitext-2-raw-v1 "
                "--model_name_or_path EleutherAI/gpt-neo-125m --output_dir {output} --checkpointing_steps 2 "
                "--resume_from_checkpoint --max_train_steps {steps} --per_device_train_batch_size 1 "
                "--per_device_eval_batch_size 1 --gradient_accumulation_steps 8 --mixed_precision bf16 "
                "--kfac --kfac-factor-update-steps 5 --kfac-inv-update-steps 50")


def _seed_command(hub, tmp_path, steps, *extra):
    argv = SEED_COMMAND.format(output=tmp_path / "runs" / "gpt-neo-125m-pretraining", steps=steps).split()
    environment = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_DATASETS_CACHE": str(tmp_path / "datasets"),
                   "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "pretrain_gpt2.py", *argv, "--log-interval", "2",
                           "--data-cache-dir", str(tmp_path / "cache"), *extra], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_the_llm_pytorch_command_line_trains_saves_and_resumes_from_a_local_cache(hub, tmp_path):
    """The guide's command line as written (bf16 for its fp16 on this CPU, shorter), the model and
    dataset found by their Hub names in a local cache: it trains with K-FAC, saves every
    --checkpointing_steps, and a second run with --resume_from_checkpoint goes on from the last one."""
    first = _seed_command(hub, tmp_path, 4)
    assert first.returncode == 0, first.stderr[-3000:]
    output = tmp_path / "runs" / "gpt-neo-125m-pretraining"
    assert sorted(p.name for p in output.iterdir() if p.name.startswith("global_step")) == ["global_step2",
                                                                                             "global_step4"]
    assert os.path.isfile(output / "global_step4" / "kfac_states_mp_rank_00.pt")
    assert " iteration        4/       4 |" in first.stdout and "> K-FAC on 8 layers" in first.stdout
    assert "starting from the weights" not in first.stdout  # --low_cpu_mem_usage: its config, fresh weights
    resumed = _seed_command(hub, tmp_path, 6)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "loaded checkpoint" in resumed.stdout and " iteration        6/       6 |" in resumed.stdout
    assert " iteration        2/" not in resumed.stdout and "K-FAC: checkpoint" not in resumed.stdout


def test_what_is_missing_or_means_nothing_here_is_one_line(tmp_path):
    def error(*argv):
        return run_distributed(1, expect_error, list(argv))[0]
    absent = error("--model_name_or_path", "EleutherAI/gpt-neo-2.7B")
    assert "--model-name-or-path EleutherAI/gpt-neo-2.7B: not a folder, and not in the local Hugging Face cache" in absent
    assert "`hf download EleutherAI/gpt-neo-2.7B`" in absent
    assert "--push_to_hub: nothing is uploaded from training" in error("--push_to_hub")
    assert "--tokenizer-name needs --model-name-or-path or --config-name" in error("--tokenizer_name", "gpt2")
    assert "--resume_from_checkpoint and --load both name" in error("--resume_from_checkpoint", "--load", "x")
    assert "--resume_from_checkpoint runs/none/step_9: no such folder" in error("--resume_from_checkpoint",
                                                                               "runs/none/step_9")
    assert "--num_train_epochs: training is counted in steps here" in error("--num_train_epochs", "3")
    assert "--per_device_eval_batch_size 2: evaluation runs at the training micro batch" in error(
        "--per_device_train_batch_size", "1", "--per_device_eval_batch_size", "2")
    assert "--lr_scheduler_type polynomial: linear, cosine, constant" in error("--lr_scheduler_type", "polynomial")
    missing = error("--dataset_name", "openwebtext", "--data-cache-dir", str(tmp_path), "--num-workers", "0")
    assert "--dataset-name openwebtext: not a folder, and not in the local Hugging Face cache" in missing


def test_the_pbs_job_in_the_guides_form_runs_the_seed_command(tmp_path):
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("x3001\nx3001\nx3002\n")
    words = dry_run("pbs_pretrain_hf_style.pbs", {"PBS_NODEFILE": str(nodefile), "PBS_O_WORKDIR": REPO})
    assert words[:words.index("pretrain_gpt2.py")] == [
        "mpiexec", "--hostfile", str(nodefile), "-n", "8", "--ppn", "4", "--env", "MASTER_ADDR=x3001",
        "--cpu-bind", "depth", "-d", "16", "python3"]
    command = " ".join(words[words.index("pretrain_gpt2.py") + 1:])
    assert command == SEED_COMMAND.format(output="runs/gpt-neo-125m-pretraining", steps=10000).replace(
        "--checkpointing_steps 2", "--checkpointing_steps 1000").replace("bf16", "fp16"), command


def test_data_files_export_their_texts_and_hold_out_the_validation_share(tmp_path):
    """--train_file without --validation_file: the first --validation_split_percentage % of its texts
    validate (run_clm's rule), the rest train; a csv's "text" column is taken, empty texts are left out;
    the export is made once and found again."""
    import csv
    import types

    from hugging_face import export_dataset
    texts = [f"text number {i}" for i in range(40)] + [""]
    with open(tmp_path / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows([i, text] for i, text in enumerate(texts))
    args = types.SimpleNamespace(dataset_name=None, dataset_config_name=None, train_file=str(tmp_path / "train.csv"),
                                 validation_file=None, validation_split_percentage=10, explicit=set())
    export_dataset(args, str(tmp_path / "cache"))

    def read(path):
        with open(path) as f:
            return [json.loads(line)["text"] for line in f]
    assert read(args.valid_data[0]) == texts[:4] and read(args.train_data[0]) == texts[4:40] and args.split == "100,0,0"
    written = os.path.getmtime(args.train_data[0])
    export_dataset(args, str(tmp_path / "cache"))
    assert os.path.getmtime(args.train_data[0]) == written


def test_resume_from_checkpoint_names_the_latest_or_one_tag(tmp_path):
    from arguments import get_args
    (tmp_path / "run" / "global_step2").mkdir(parents=True)
    (tmp_path / "run" / "latest").write_text("global_step2")
    alone = get_args(["--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint"])
    directory = get_args(["--resume_from_checkpoint", str(tmp_path / "run")])
    tag = get_args(["--resume_from_checkpoint", str(tmp_path / "run" / "global_step2")])
    assert (alone.load, alone.load_tag) == (str(tmp_path / "run"), None)
    assert (directory.load, directory.load_tag) == (str(tmp_path / "run"), None)
    assert (tag.load, tag.load_tag) == (str(tmp_path / "run"), "global_step2")
