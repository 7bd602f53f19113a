"""A flag and a ds_config value that disagree, a flag the ds_config's scheduler cannot honour, a ds_config
feature this project cannot honour, and a flag of the other model are each one error naming both sides;
"auto" and absent fields take the flags' values."""

import json

import pytest

import arguments
from deepspeed_config import ConfigError, build_ds_config


def _config(tmp_path, optimizer_params=None, scheduler=None, **extra):
    config = {"optimizer": {"type": "AdamW", "params": optimizer_params or {}}, **extra}
    if scheduler:
        config["scheduler"] = scheduler
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    return str(path)


def _build(*argv):
    return build_ds_config(arguments.get_args(list(argv)), 1)


def _refused(*argv):
    with pytest.raises(ConfigError) as error:
        _build(*argv)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_adam_betas_from_a_flag_and_the_config_must_agree(tmp_path):
    neox = "ds_configs/ds_gpt_neox_zero1.json"  # ships "betas": [0.9, 0.95]
    message = _refused("--deepspeed_config", neox, "--adam-beta1", "0.8")
    assert "betas = [0.9, 0.95]" in message and "--adam-beta1 0.8" in message
    assert _build("--deepspeed_config", neox, "--adam-beta2", "0.95")["optimizer"]["params"]["betas"] == [0.9, 0.95]
    assert _build("--deepspeed_config", neox)["optimizer"]["params"]["betas"] == [0.9, 0.95]
    auto = _config(tmp_path, {"betas": "auto"})
    assert _build("--deepspeed_config", auto, "--adam-beta1", "0.8")["optimizer"]["params"]["betas"] == [0.8, 0.999]


def test_the_optimizer_fields_refuse_a_contradicting_flag(tmp_path):
    config = _config(tmp_path, {"lr": 1e-4, "weight_decay": 0.1, "eps": 1e-6})
    for flag, value, field in (("--lr", "3e-4", "lr"), ("--weight-decay", "0.01", "weight_decay"),
                               ("--adam-eps", "1e-8", "eps")):
        message = _refused("--deepspeed_config", config, flag, value)
        assert f"optimizer.params.{field}" in message and flag in message


def test_a_scheduler_takes_the_schedule_flags_where_it_has_fields(tmp_path):
    cosine = _config(tmp_path, scheduler={"type": "WarmupCosineLR", "params": {}})
    params = _build("--deepspeed_config", cosine, "--lr", "1e-3", "--min-lr", "1e-4", "--train-iters", "200",
                    "--warmup", "0.1")["scheduler"]["params"]
    assert params == {"warmup_num_steps": 20, "total_num_steps": 200, "cos_min_ratio": pytest.approx(0.1)}


@pytest.mark.parametrize("scheduler, flags, words", [
    ({"type": "WarmupLR", "params": {}}, ["--min-lr", "1e-5"], ["WarmupLR has no setting for --min-lr"]),
    ({"type": "WarmupLR", "params": {}}, ["--lr-decay-iters", "50"], ["no setting for --lr-decay-iters"]),
    ({"type": "OneCycle", "params": {}}, ["--lr-warmup-iters", "5"], ["no setting for --lr-warmup-iters"]),
    ({"type": "WarmupCosineLR", "params": {"cos_min_ratio": 0.5}}, ["--min-lr", "1e-5"],
     ["cos_min_ratio = 0.5", "--min-lr"]),
    ({"type": "WarmupDecayLR", "params": {"total_num_steps": 100}}, ["--lr-decay-iters", "50"],
     ["total_num_steps = 100", "--lr-decay-iters gives 50"]),
    ({"type": "WarmupDecayLR", "params": {"warmup_num_steps": 10}}, ["--lr-warmup-iters", "5"],
     ["warmup_num_steps = 10", "--lr-warmup-iters"]),
    ({"type": "WarmupDecayLR", "params": {"warmup_max_lr": 1e-3}}, ["--lr", "3e-4"], ["warmup_max_lr", "--lr"]),
    ({"type": "CosineAnnealing", "params": {}}, [], ["not one of DeepSpeed's"]),
])
def test_a_scheduler_refuses_a_flag_it_cannot_honour(tmp_path, scheduler, flags, words):
    message = _refused("--deepspeed_config", _config(tmp_path, scheduler=scheduler), "--train-iters", "100", *flags)
    assert all(word in message for word in words), message


def test_ds_config_features_we_cannot_honour_are_refused_by_name(tmp_path):
    for key in ("curriculum_learning", "progressive_layer_drop", "compression_training", "sparse_attention"):
        message = _refused("--deepspeed_config", _config(tmp_path, **{key: {"enabled": True}}))
        assert f"'{key}'" in message and "cannot honour" in message


@pytest.mark.parametrize("bert, flag", [(False, ["--max-preds-per-seq", "10"]), (False, ["--masked-lm-prob", "0.2"]),
                                        (False, ["--sentence-order-prediction"]), (False, ["--fp32-tokentypes"]),
                                        (True, ["--eod-mask-loss"]), (True, ["--reset-position-ids"]),
                                        (True, ["--reset-attention-mask"]), (True, ["--rotary-pct", "0.5"])])
def test_the_other_models_flags_are_refused_naming_its_script(capsys, bert, flag):
    with pytest.raises(SystemExit) as stopped:
        arguments.get_args(flag, bert=bert)
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert flag[0] in line and ("pretrain_gpt2.py" if bert else "pretrain_bert.py") in line


def test_presets_of_models_with_their_own_tokenizer_need_one_named(capsys):
    """Pythia and GPT-NeoX-20B read GPT-NeoX's tokenizer: their presets no longer train on GPT-2's BPE
    without a word."""
    with pytest.raises(SystemExit):
        arguments.get_args(["--model-size", "pythia-160m"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--tokenizer-type HFTokenizer --vocab-file" in line and "pythia-160m" in line
    args = arguments.get_args(["--model-size", "pythia-160m", "--tokenizer-type", "HFTokenizer",
                               "--vocab-file", "t.json"])
    assert (args.tokenizer_type, args.vocab_file, args.parallel_residual) == ("HFTokenizer", "t.json", True)


def test_bf16_is_autocast_and_bf16_weights_deepspeeds_bf16_optimizer(tmp_path):
    """--bf16: fp32 weights under torch.autocast (DeepSpeed's torch_autocast); --bf16-weights: DeepSpeed's bf16
    optimizer; a ds_config's explicit bf16 or torch_autocast section against the other flag is one error."""
    autocast = _build("--bf16")
    assert autocast["torch_autocast"] == {"enabled": True, "dtype": "torch.bfloat16"}
    assert autocast["bf16"]["enabled"] is False
    weights = _build("--bf16-weights")
    assert weights["bf16"]["enabled"] is True and weights["torch_autocast"]["enabled"] is False
    assert _build()["torch_autocast"]["enabled"] is False and _build()["bf16"]["enabled"] is False
    shipped = build_ds_config(arguments.get_args(["--deepspeed_config", "ds_configs/ds_zero2_bf16.json"]), 1)
    assert shipped["torch_autocast"]["enabled"] is True and shipped["bf16"]["enabled"] is False
    written_true = _config(tmp_path, bf16={"enabled": True})
    assert _build("--deepspeed_config", written_true)["bf16"]["enabled"] is True
    assert "--bf16-weights" in _refused("--deepspeed_config", written_true, "--bf16")
    assert _build("--deepspeed_config", written_true, "--bf16-weights")["bf16"]["enabled"] is True
    assert "bf16.enabled = false but --bf16" in _refused("--deepspeed_config", "ds_configs/ds_zero0_fp32.json", "--bf16")
    assert "torch_autocast and bf16" in _refused("--deepspeed_config", "ds_configs/ds_zero2_bf16.json",
                                                 "--bf16-weights")
    assert "bfloat16" in _refused("--deepspeed_config", _config(tmp_path, torch_autocast={"enabled": True,
                                                                                           "dtype": "torch.float16"}))
    with pytest.raises(SystemExit):
        arguments.get_args(["--bf16", "--bf16-weights"])
