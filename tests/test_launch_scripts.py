"""Every launch script reads every variable the README documents: each one's dry run (DRY_RUN=1) prints
the command it would run, checked here word by word (the last occurrence of a flag is what argparse keeps)."""

import glob
import os
import re

import pytest
from launches import REPO, dry_run

VARIABLES = {"TP_SIZE": "4", "PP_SIZE": "2", "DATA_PATH": "0.3 /data/a_text_document 0.7 /data/b_text_document",
             "VOCAB_FILE": "/tok/vocab.json", "MERGE_FILE": "/tok/merges.txt", "CHECKPOINT_PATH": "/ckpt/run 1",
             "MODEL_SIZE": "gpt2-1.3b", "NUM_LAYERS": "6", "HIDDEN_SIZE": "512", "NUM_HEADS": "8",
             "SEQ_LENGTH": "2048", "BATCH_SIZE": "3", "TRAIN_ITERS": "77", "LR": "1e-4", "MASTER_PORT": "29123",
             "DS_CONFIG": "ds_configs/ds_zero3.json", "NUM_GPUS": "3", "NPROC": "3", "GPUS_PER_NODE": "3",
             "TIMEOUT_MINUTES": "7", "TENSORBOARD_DIR": "/tb", "NP": "6", "NNODES": "1", "ENTRY": "pretrain_gpt2.py"}
FLAGS = {"--model-parallel-size": "4", "--pipe-parallel-size": "2", "--vocab-file": "/tok/vocab.json",
         "--merge-file": "/tok/merges.txt", "--save": "/ckpt/run 1", "--load": "/ckpt/run 1",
         "--model-size": "gpt2-1.3b", "--num-layers": "6", "--hidden-size": "512", "--num-attention-heads": "8",
         "--seq-length": "2048", "--batch-size": "3", "--train-iters": "77", "--lr": "1e-4"}
# what each kind of launch adds: {flag: value} of the launcher and of the entry script
LAUNCHERS = {
    "python": {},
    "torchrun": {"--nproc_per_node": "3", "--standalone": None},
    "deepspeed": {"--num_gpus": "3", "--master_port": "29123", "--deepspeed_config": "ds_configs/ds_zero3.json"},
    "mpiexec": {"-n": "6"},
}
CLUSTER = {"--deepspeed_config": "ds_configs/ds_zero3.json", "--distributed-timeout-minutes": "7",
           "--tensorboard-dir": "/tb", "--bf16": None}
JOBS = {  # job scripts: (scheduler variables, launch words expected)
    "slurm_torchrun.sbatch": ({"SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "42", "SLURM_JOB_NUM_NODES": "2"},
                              {"--nnodes": "2", "--nproc_per_node": "3", "--rdzv_endpoint": "gpu07:29123",
                               "--rdzv_backend": "c10d", "--rdzv_id": "42", **CLUSTER}),
    "slurm_srun.sbatch": ({"SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "42"},
                          {"--ntasks-per-node=3": None, "--export=ALL,MASTER_PORT=29123": None, **CLUSTER}),
    "slurm_deepspeed.sbatch": ({"SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "42", "LAUNCHER": "slurm"},
                               {"--launcher": "slurm", "--master_addr": "gpu07", "--master_port": "29123", **CLUSTER}),
    "pbs_torchrun.pbs": ({}, {"--nnodes": "2", "--rdzv_endpoint": "n1:29123", "--nproc_per_node": "3",
                              "--hostfile": None, "--ppn": "1", **CLUSTER}),
    "pbs_deepspeed.pbs": ({"LAUNCHER": "mpich"}, {"--launcher": "mpich", "--master_addr": "n1", **CLUSTER}),
}
LAUNCH_SCRIPTS = sorted(os.path.basename(path) for path in glob.glob(os.path.join(REPO, "scripts", "*.sh"))
                        if re.search(r"source scripts/defaults.sh|run_(torchrun|deepspeed|one_process).sh", open(path).read()))


def _launcher(words):
    return next(name for name in ("torchrun", "deepspeed", "mpiexec", "python") if name in words[0])


def _check(words, expected):
    for flag, value in expected.items():
        assert flag in words, (flag, words)
        if value is not None:
            last = len(words) - 1 - words[::-1].index(flag)
            assert words[last + 1] == value, (flag, words[last + 1], value)
    data = words.index("--data-path")
    assert words[data + 1:data + 5] == VARIABLES["DATA_PATH"].split(), words


@pytest.mark.parametrize("script", [s for s in LAUNCH_SCRIPTS if s not in ("cluster.sh", "defaults.sh",
                                                                             "multinode_pretrain_gpt2.sh")])
def test_each_launch_script_honours_every_documented_variable(script, tmp_path):
    flags = ["a.tfrecord"] if "tfrecords" in script else []
    words = dry_run(script, VARIABLES, *flags, "--extra-flag", "x")
    _check(words, {**FLAGS, **LAUNCHERS[_launcher(words)]})
    assert words[-2:] == ["--extra-flag", "x"]


@pytest.mark.parametrize("job", JOBS)
def test_each_cluster_job_script_honours_every_documented_variable(job, tmp_path):
    scheduler, expected = JOBS[job]
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("n1\nn1\nn2\n")
    env = {**VARIABLES, **scheduler, "PBS_NODEFILE": str(nodefile), "HOSTFILE": str(tmp_path / "hostfile"),
           "SLURM_SUBMIT_DIR": REPO, "PBS_O_WORKDIR": REPO}
    words = dry_run(job, env, "--extra-flag", "x")
    _check(words, {**FLAGS, **expected})
    assert words[-2:] == ["--extra-flag", "x"]
    if "deepspeed" in job:
        hosts = "gpu07 slots=3\ngpu08 slots=3\n" if "slurm" in job else "n1 slots=3\nn2 slots=3\n"
        assert (tmp_path / "hostfile").read_text() == hosts


def test_two_torchrun_nodes_meet_at_the_rendezvous_endpoint():
    words = dry_run("pretrain_gpt2_distributed.sh", {**VARIABLES, "NNODES": "2", "RDZV_ENDPOINT": "h1:29400"})
    _check(words, {**FLAGS, "--nnodes": "2", "--rdzv_backend": "c10d", "--rdzv_endpoint": "h1:29400",
                   "--max_restarts": "0"})
    assert "--standalone" not in words


@pytest.mark.parametrize("mp_size, launcher", [("1", ["python"]), ("2", ["deepspeed", "--num_gpus", "2"])])
def test_generate_text_reads_the_checkpoint_and_the_tensor_parallel_size(mp_size, launcher):
    words = dry_run("generate_text.sh", {"MP_SIZE": mp_size, "CHECKPOINT_PATH": "/ckpt/run 1", "GREEDY": "1"})
    assert words[:len(launcher)] == launcher and "generate_samples.py" in words and "--greedy" in words
    assert words[words.index("--load") + 1] == "/ckpt/run 1"
    assert words[words.index("--model-parallel-size") + 1] == mp_size
