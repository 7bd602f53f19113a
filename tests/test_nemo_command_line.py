"""NeMo's training command line (Hydra overrides, a NeMo YAML) means our flags: the guide's command gives the
same settings as the flags written by hand; CosineAnnealing with constant steps gives NeMo's rates; a YAML
with interpolations reads as NeMo reads it; what cannot be honoured is one line naming the setting; a
tiny NeMo command trains, keeps its best checkpoints in the experiment folder and resumes from it."""

import math
import os

import pytest

import arguments
from distributed import run_distributed
from gpt2_runs import train
from learning_rates import learning_rate, warmup_iters

GUIDE = """trainer.devices=1 trainer.num_nodes=1 trainer.max_epochs=null trainer.max_steps=300000
trainer.val_check_interval=300 trainer.log_every_n_steps=50 trainer.limit_val_batches=50 trainer.limit_test_batches=50
trainer.accumulate_grad_batches=1 trainer.precision=bf16 model.micro_batch_size=6 model.global_batch_size=192
model.tensor_model_parallel_size=1 model.pipeline_model_parallel_size=1 model.max_position_embeddings=1024
model.encoder_seq_length=1024 model.hidden_size=768 model.ffn_hidden_size=3072 model.num_layers=12
model.num_attention_heads=12 model.init_method_std=0.021 model.hidden_dropout=0.1 model.layernorm_epsilon=1e-5
model.tokenizer.vocab_file=gpt2-vocab.json model.tokenizer.merge_file=gpt2-merges.txt
model.data.data_prefix=[1.0,data/gpt_text_document] model.data.num_workers=2 model.data.seq_length=1024
model.data.splits_string='980,10,10' model.optim.name=fused_adam model.optim.lr=6e-4 model.optim.betas=[0.9,0.95]
model.optim.weight_decay=0.1 model.optim.sched.name=CosineAnnealing model.optim.sched.warmup_steps=750
model.optim.sched.constant_steps=80000 model.optim.sched.min_lr=6e-5 exp_manager.resume_if_exists=True
exp_manager.resume_ignore_no_checkpoint=True exp_manager.create_checkpoint_callback=True
exp_manager.checkpoint_callback_params.monitor=val_loss exp_manager.checkpoint_callback_params.save_top_k=3
exp_manager.checkpoint_callback_params.mode=min exp_manager.checkpoint_callback_params.always_save_nemo=False""".split()

OURS = """--train-iters 300000 --eval-interval 300 --log-interval 50 --eval-iters 50 --bf16 --batch-size 6
--global-batch-size 192 --model-parallel-size 1 --pipe-parallel-size 1 --max-position-embeddings 1024 --seq-length 1024
--hidden-size 768 --ffn-hidden-size 3072 --num-layers 12 --num-attention-heads 12 --init-method-std 0.021
--hidden-dropout 0.1 --layernorm-epsilon 1e-5 --vocab-file gpt2-vocab.json --merge-file gpt2-merges.txt
--data-path 1.0 data/gpt_text_document --num-workers 2 --split 980,10,10 --optimizer adamw --lr 6e-4 --adam-beta1 0.9
--adam-beta2 0.95 --weight-decay 0.1 --lr-decay-style cosine --lr-warmup-iters 750 --lr-decay-iters 220000
--min-lr 6e-5 --save nemo_experiments/megatron_gpt/checkpoints --load nemo_experiments/megatron_gpt/checkpoints
--save-best-k 3 --tensorboard-dir nemo_experiments/megatron_gpt --activation gelu""".split()


def _settings(args):
    return {name: value for name, value in vars(args).items() if name != "explicit"}


def test_the_guides_command_means_the_flags_written_by_hand():
    assert _settings(arguments.get_args(GUIDE)) == _settings(arguments.get_args(OURS))


def _nemo_cosine_annealing(step, max_lr, min_lr, warmup, constant, max_steps):
    """NeMo's CosineAnnealing with constant_steps > 0, as its documentation gives it."""
    decay = max_steps - constant - warmup
    if step <= warmup:
        return max_lr * step / warmup
    if step > warmup + decay:
        return min_lr
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / decay))


def test_cosine_annealing_with_constant_steps_gives_nemos_rates():
    argv = ["trainer.max_steps=1000", "model.optim.lr=6e-4", "model.optim.sched.name=CosineAnnealing",
            "model.optim.sched.warmup_steps=50", "model.optim.sched.constant_steps=200", "model.optim.sched.min_lr=6e-5"]
    args = arguments.get_args(argv + ["exp_manager.create_checkpoint_callback=False"])
    ours = [learning_rate(step, args.lr, args.min_lr, warmup_iters(args), args.lr_decay_iters, args.lr_decay_style)
            for step in range(1000)]
    theirs = [_nemo_cosine_annealing(step, 6e-4, 6e-5, 50, 200, 1000) for step in range(1001)]
    assert all(math.isclose(ours[s], theirs[s], rel_tol=1e-9) for s in range(50, 1000))  # from the warmup's end
    assert all(math.isclose(ours[s], theirs[s + 1], rel_tol=1e-9) for s in range(50))  # one step sooner in it
    assert ours[799] > 6e-5 and ours[800:] == [6e-5] * 200  # the last constant_steps at min_lr


def test_a_nemo_yaml_with_interpolations_and_overrides(tmp_path):
    (tmp_path / "gpt.yaml").write_text("""name: my_gpt
trainer:
  devices: 1
  num_nodes: 1
  precision: 32
  max_epochs: 1000
  max_steps: 100
  val_check_interval: 10
  limit_val_batches: 2
  limit_test_batches: 2
  logger: False
exp_manager:
  exp_dir: null
  name: ${name}
  checkpoint_callback_params:
    save_top_k: 2
    model_parallel_size: ${multiply:${model.tensor_model_parallel_size}, ${model.pipeline_model_parallel_size}}
model:
  tensor_model_parallel_size: 1
  pipeline_model_parallel_size: 1
  encoder_seq_length: 512
  max_position_embeddings: ${.encoder_seq_length}
  num_layers: 2
  hidden_size: 64
  num_attention_heads: 2
  data:
    data_prefix: ???
    seq_length: ${model.encoder_seq_length}
""", encoding="utf-8")
    args = arguments.get_args(["--config-path", str(tmp_path), "--config-name", "gpt", "model.encoder_seq_length=256",
                               "model.data.data_prefix=[corpus_text_document]", "--lr", "1e-3"])
    assert (args.seq_length, args.max_position_embeddings, args.num_layers, args.hidden_size) == (256, 256, 2, 64)
    assert (args.train_iters, args.eval_interval, args.eval_iters, args.save_best_k) == (100, 10, 2, 2)
    assert args.save == os.path.join("nemo_experiments", "my_gpt", "checkpoints") and args.lr == 1e-3
    assert args.data_path == ["corpus_text_document"] and not args.bf16 and not args.fp16


@pytest.mark.parametrize("setting, words", [
    ("trainer.precision=16", "trainer.precision=16 is fp16, which needs a GPU (DeepSpeed refuses it on a CPU): give "
                             "trainer.precision=bf16"),
    ("trainer.devices=2", "trainer.devices=2 x trainer.num_nodes=1 is 2 processes but the launcher started 1"),
    ("model.sequence_parallel=True", "model.sequence_parallel=True: only False here (sequence parallelism"),
    ("model.optim.sched.name=NoamAnnealing", "model.optim.sched.name=NoamAnnealing: CosineAnnealing is the schedule"),
    ("exp_manager.checkpoint_callback_params.monitor=reduced_train_loss",
     "monitor=reduced_train_loss: only val_loss here"),
    ("trainer.val_check_interval=0.25", "trainer.val_check_interval=0.25: a number of steps here"),
    ("model.mcore_gpt=True", "model.mcore_gpt=True: not a setting NeMo's GPT config has that is honoured here"),
    ("model.optim.name=novograd", "model.optim.name=novograd: fused_adam, adam, adamw"),
])
def test_a_setting_that_cannot_be_honoured_is_one_line_naming_it(capsys, setting, words):
    with pytest.raises(SystemExit) as stopped:
        arguments.get_args(["trainer.max_steps=10", "model.optim.sched.name=CosineAnnealing", setting])
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert words in line, line


def test_a_tiny_nemo_command_trains_keeps_its_best_checkpoints_and_resumes(tmp_path, data_prefix):
    experiment = tmp_path / "experiment"
    argv = ["trainer.precision=32", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
            "trainer.log_every_n_steps=1", "model.micro_batch_size=4", "model.global_batch_size=4",
            "model.encoder_seq_length=32", "model.num_layers=2", "model.hidden_size=64", "model.num_attention_heads=2",
            "model.hidden_dropout=0.0", "model.tokenizer.type=CharacterLevelTokenizer",
            f"model.data.data_prefix=[1.0,{data_prefix}]", f"model.data.index_mapping_dir={os.path.dirname(data_prefix)}",
            "model.data.num_workers=0", "model.optim.lr=1e-3", "model.optim.sched.name=CosineAnnealing",
            "model.optim.sched.warmup_steps=1", "model.optim.sched.constant_steps=2", "model.optim.sched.min_lr=1e-4",
            "model.optim.sched.max_steps=8",
            f"exp_manager.explicit_log_dir={experiment}", "exp_manager.resume_if_exists=True",
            "exp_manager.resume_ignore_no_checkpoint=True", "exp_manager.checkpoint_callback_params.save_top_k=2"]
    first = run_distributed(1, train, argv + ["trainer.max_steps=6"])[0]
    assert len(first) == 6 and all(math.isfinite(loss) for loss in first)
    checkpoints = experiment / "checkpoints"
    assert (checkpoints / "best").read_text().strip() in {"global_step2", "global_step4", "global_step6"}
    assert (checkpoints / "latest").read_text().strip() == "global_step6"
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(experiment))
    resumed = run_distributed(1, train, argv + ["trainer.max_steps=8"])[0]
    assert len(resumed) == 2  # iterations 7 and 8: it resumed from the experiment folder
