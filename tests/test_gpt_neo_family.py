"""GPT-Neo and GPT-NeoX on our one transformer: random transformers models convert and give transformers'
logits (1e-5) at TP 1 and 2 and the same greedy tokens with the KV cache, and convert back to equal
state dicts; each architecture choice against a plain computation written here."""

import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from distributed import run_distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
NEW_TOKENS = 12


def _hf_model(family):
    from transformers import GPTNeoConfig, GPTNeoForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM
    torch.manual_seed(0)
    if family == "gpt_neo":  # 4 layers global/local, a window shorter than the sequence
        return GPTNeoForCausalLM(GPTNeoConfig(vocab_size=50257, max_position_embeddings=64, hidden_size=64, num_layers=4,
                                              num_heads=4, attention_types=[[["global", "local"], 2]], window_size=5,
                                              initializer_range=0.1))
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=50257, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, use_parallel_residual=True, initializer_range=0.1,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}))


@pytest.fixture(scope="module", params=["gpt_neo", "gpt_neox"])
def converted(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    model = _hf_model(request.param).eval()
    model.save_pretrained(root / "hf")
    tokens = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(tokens).logits
        greedy = tokens[:1, :6]
        for _ in range(NEW_TOKENS):  # transformers' model, no cache: the plain reference
            greedy = torch.cat([greedy, model(greedy).logits[:, -1:].argmax(-1)], dim=1)
    return {"family": request.param, "hf": str(root / "hf"), "root": root, "tokens": tokens, "logits": logits,
            "greedy": greedy[0, 6:].tolist()}


def _ours(hf_dir, tensor_parallel, tokens):
    from arguments import get_args
    from inference import load_gpt2
    from model.generation import generate
    model, tokenizer = load_gpt2(get_args(["--load", hf_dir, "--model-parallel-size", str(tensor_parallel)]))
    with torch.no_grad():
        logits = model(tokens)[..., :tokenizer.vocab_size]
        greedy = generate(model, tokens[:1, :6], NEW_TOKENS, tokenizer.vocab_size, use_cache=True, greedy=True)[0]
    return logits, greedy


@pytest.mark.parametrize("tensor_parallel", [1, 2])
def test_converted_model_gives_transformers_logits_and_tokens(converted, tensor_parallel):
    logits, greedy = run_distributed(tensor_parallel, _ours, converted["hf"], tensor_parallel, converted["tokens"])[0]
    torch.testing.assert_close(logits, converted["logits"], atol=1e-5, rtol=1e-5)
    assert greedy == converted["greedy"] and len(set(greedy)) > 3


def test_round_trip_gives_equal_state_dicts(converted):
    import convert_checkpoint
    from safetensors.torch import load_file
    root = converted["root"]
    convert_checkpoint.main(["--from-hf", converted["hf"], "--save", str(root / "ckpt"), "--model-parallel-size", "2"])
    convert_checkpoint.main(["--load", str(root / "ckpt"), "--to-hf", str(root / "back")])
    original, back = load_file(os.path.join(converted["hf"], "model.safetensors")), \
        load_file(str(root / "back" / "model.safetensors"))
    assert original.keys() == back.keys()
    assert all(torch.equal(original[name], back[name]) for name in original)
    import json
    config = json.loads((root / "back" / "config.json").read_text())
    assert config["model_type"] == converted["family"]


# Each architecture choice against a plain computation

def _single_rank(body, *args):
    return run_distributed(1, body, *args)[0]


def _attention(architecture, attention_type, hidden_size=32, heads=4):
    from model.transformer import ParallelSelfAttention, init_normal
    torch.manual_seed(0)
    return ParallelSelfAttention(hidden_size, heads, 0.0, 0.0, init_normal(0.3), init_normal(0.3), True, architecture,
                                 attention_type).eval()


def _plain_attention(module, x, bias, scale):
    """softmax(q k^T x scale + bias) v, then the output projection, from the module's weights."""
    batch, seq, _ = x.shape
    q, k, v = (F.linear(x, module.query_key_value.weight, module.query_key_value.bias)
               .view(batch, seq, 3, module.heads_here, module.head_dim).permute(2, 0, 3, 1, 4))
    return q, k, v, lambda q_, k_: F.linear(
        (torch.softmax(q_ @ k_.transpose(-1, -2) * scale + bias, -1) @ v).transpose(1, 2).reshape(batch, seq, -1),
        module.dense.weight, module.dense.bias)


def _causal(seq, extra=None):
    i, j = torch.arange(seq)[:, None], torch.arange(seq)[None, :]
    allowed = (j <= i) if extra is None else (j <= i) & extra(i, j)
    return torch.zeros(seq, seq).masked_fill(~allowed, float("-inf"))


def _attention_cases():
    import mpu
    from model.architecture import Architecture
    from model.transformer import causal_linear_attention
    mpu.initialize_model_parallel(1)
    x = torch.randn(2, 12, 32, generator=torch.Generator().manual_seed(2))
    results = {}
    local = _attention(Architecture(attention_window=4), "local")
    q, k, v, attend = _plain_attention(local, x, _causal(12, lambda i, j: i - j < 4), 1 / math.sqrt(8))
    results["local"] = (local(x), attend(q, k))
    unscaled = _attention(Architecture(scale_attention=False), "global")
    q, k, v, attend = _plain_attention(unscaled, x, _causal(12), 1.0)
    results["unscaled"] = (unscaled(x), attend(q, k))
    alibi = _attention(Architecture(position_embedding_type="alibi"), "global")
    slopes = torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8])  # the paper's, for 4 heads
    distance = (torch.arange(12)[:, None] - torch.arange(12)[None, :]).float()
    q, k, v, attend = _plain_attention(alibi, x, _causal(12) - slopes[:, None, None] * distance, 1 / math.sqrt(8))
    results["alibi"] = (alibi(x), attend(q, k))
    rotary = _attention(Architecture(position_embedding_type="rotary", rotary_pct=0.5), "global")
    q, k, v, attend = _plain_attention(rotary, x, _causal(12), 1 / math.sqrt(8))

    def rotate(t):  # the first 4 of 8 dims, pairs (d, d + 2) turned by position x 10000^(-d / 2)
        out = t.clone()
        for d in range(2):
            angle = torch.arange(12).float() * 10000 ** (-2 * d / 4)
            a, b = t[..., d], t[..., d + 2]
            out[..., d], out[..., d + 2] = a * angle.cos() - b * angle.sin(), b * angle.cos() + a * angle.sin()
        return out
    results["rotary"] = (rotary(x), attend(rotate(q), rotate(k)))
    linear = _attention(Architecture(), "linear")
    q, k, v, _ = _plain_attention(linear, x, None, 1.0)
    rows = []
    for t in range(12):  # GPT-Neo's causal linear attention, position by position
        weights = torch.exp(k[:, :, :t + 1])  # [b, h, s, i]
        context = torch.einsum("bhsi,bhso->bhio", weights, v[:, :, :t + 1]) / (weights.sum(2)[..., None] + 1e-6)
        rows.append(torch.einsum("bhi,bhio->bho", torch.softmax(q[:, :, t], -1), context))
    plain = torch.stack(rows, 2)
    results["linear in blocks of 5"] = (causal_linear_attention(q, k, v, block=5), plain)
    plain = plain.transpose(1, 2).reshape(2, 12, 32)
    results["linear"] = (linear(x), F.linear(plain, linear.dense.weight, linear.dense.bias))
    return {name: (ours.detach(), plain.detach()) for name, (ours, plain) in results.items()}


def test_attention_types_and_positions_equal_plain_attention():
    for name, (ours, plain) in _single_rank(_attention_cases).items():
        torch.testing.assert_close(ours, plain, atol=1e-5, rtol=1e-4, msg=name)


def _blocks_cases():
    import mpu
    from model import GPT2Model
    from model.architecture import Architecture
    from model.normalization import RMSNorm, ScaleNorm
    from model.transformer import ParallelMLP, ParallelTransformerLayer, init_normal, layer_options
    mpu.initialize_model_parallel(1)
    torch.manual_seed(0)
    x = torch.randn(2, 6, 32)
    results = {}
    for activation, gate in (("swiglu", F.silu), ("geglu", F.gelu), ("mlp_glu", lambda t: F.gelu(t, approximate="tanh"))):
        mlp = ParallelMLP(32, 48, 0.0, init_normal(0.2), init_normal(0.2), activation)
        value, gated = F.linear(x, mlp.gated_h_to_4h.weight, mlp.gated_h_to_4h.bias).chunk(2, -1)
        results[activation] = (mlp(x), F.linear(value * gate(gated), mlp.dense_4h_to_h.weight, mlp.dense_4h_to_h.bias))
    rms = RMSNorm(32)
    rms.weight.data.uniform_(0.5, 1.5)
    results["rmsnorm"] = (rms(x), x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * rms.weight)
    scale = ScaleNorm(32)
    scale.scale.data.fill_(1.7)
    centred = x - x.mean(-1, keepdim=True)
    results["scalenorm"] = (scale(x), centred / torch.sqrt((centred ** 2).mean(-1, keepdim=True) + 1e-5) * 1.7)
    def layer(architecture):
        return ParallelTransformerLayer(**layer_options(32, 4, 2, 0.0, 0.0, 0.2, architecture=architecture)).eval()
    parallel = layer(Architecture(parallel_residual=True))
    results["parallel residual"] = (parallel(x), x + parallel.attention(parallel.attention_layernorm(x))
                                    + parallel.mlp(parallel.mlp_layernorm(x)))
    rezero = layer(Architecture(rezero=True))
    results["rezero at start"] = (rezero(x), x)
    rezero.attention_rezero.data.fill_(0.5)
    rezero.mlp_rezero.data.fill_(0.25)
    after_attention = x + 0.5 * rezero.attention(x)
    results["rezero"] = (rezero(x), after_attention + 0.25 * rezero.mlp(after_attention))
    axial = GPT2Model(1, 64, 32, 4, 12, 0.0, 0.0, 0.0, architecture=Architecture(position_embedding_type="axial",
                                                                                  axial_pos_shape=(3, 4))).eval()
    first, second = axial.axial_position_embeddings_1, axial.axial_position_embeddings_2
    table = torch.stack([(first[p // 4] + second[p % 4]) / 2 for p in range(12)])
    results["axial"] = (axial._positions(torch.arange(12)[None], 12)[0], table)
    return {name: (ours.detach(), plain.detach()) for name, (ours, plain) in results.items()}


def test_mlp_norms_and_residuals_equal_plain_computations():
    for name, (ours, plain) in _single_rank(_blocks_cases).items():
        torch.testing.assert_close(ours, plain, atol=1e-5, rtol=1e-4, msg=name)


def test_attention_types_flag_forms():
    from model.architecture import parse_attention_types
    assert parse_attention_types('[[["global", "local"], 2]]', 4) == ("global", "local", "global", "local")
    assert parse_attention_types("global local", 3) == ("global", "local", "global")
    with pytest.raises(ValueError, match="names 2 layers; the model has 4"):
        parse_attention_types('[[["global", "local"], 1]]', 4)
    with pytest.raises(ValueError, match="expected global, local, linear"):
        parse_attention_types("global sparse", 2)


def test_optimizer_choice_goes_into_the_ds_config(tmp_path):
    import json

    import arguments
    from deepspeed_config import ConfigError, build_ds_config
    adafactor = build_ds_config(arguments.get_args(["--optimizer", "adafactor", "--lr", "3e-3"]), 1)
    assert adafactor["optimizer"] == {"type": "Adafactor", "params": {"lr": 3e-3, "weight_decay": 0.01}}
    sgd = build_ds_config(arguments.get_args(["--optimizer", "sgd", "--zero-stage", "2"]), 2)
    assert sgd["optimizer"]["type"] == "SGD" and sgd["optimizer"]["params"]["momentum"] == 0.9
    assert sgd["zero_allow_untested_optimizer"] is True
    with pytest.raises(ConfigError, match="ZeRO hands it flat 1-D partitions"):
        build_ds_config(arguments.get_args(["--optimizer", "adafactor", "--zero-stage", "2"]), 2)
    config = tmp_path / "adamw.json"
    config.write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {}}}))
    with pytest.raises(ConfigError, match="names the optimizer 'AdamW' but --optimizer adafactor"):
        build_ds_config(arguments.get_args(["--optimizer", "adafactor", "--deepspeed_config", str(config)]), 1)


def _moe_case():
    import mpu
    from model.moe import MoEMLP
    from model.transformer import ParallelMLP, init_normal
    mpu.initialize_model_parallel(1)
    torch.manual_seed(0)
    expert = ParallelMLP(16, 32, 0.0, init_normal(0.2), init_normal(0.1), "gelu_tanh")
    layer = MoEMLP(expert, 16, num_experts=4, expert_parallel_size=1, top_k=1, capacity_factor=8.0, min_capacity=4,
                   seed=7, init_stds=lambda name: 0.2).eval()
    x = torch.randn(2, 10, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = layer(x)
        experts = layer.moe.deepspeed_moe.experts.deepspeed_experts
        probabilities = torch.softmax(layer.moe.deepspeed_moe.gate.wg(x.reshape(-1, 16)).float(), dim=-1)
        chosen = probabilities.argmax(-1)
        plain = torch.stack([probabilities[t, e] * experts[e](x.reshape(-1, 16)[t]) for t, e in enumerate(chosen.tolist())])
    distinct = len({round(float(e.dense_h_to_4h.weight[0, 0]), 6) for e in experts})
    return ours.reshape(-1, 16), plain, distinct, len(set(chosen.tolist())), float(layer.aux_loss)


def test_mixture_of_experts_routes_each_token_to_its_top_expert():
    """DeepSpeed's MoE layer with ample capacity: each token gets its most probable expert's output times
    that probability (a plain top-1 computation here); the experts start different; the balance loss is kept."""
    ours, plain, distinct, used, aux = _single_rank(_moe_case)
    torch.testing.assert_close(ours, plain, atol=1e-5, rtol=1e-4)
    assert distinct == 4 and used > 1 and aux > 0


def _parameter_counts():
    import mpu
    from model import GPT2Model
    from model.architecture import Architecture
    from training import count_parameters
    mpu.initialize_model_parallel(1)
    counts = {}
    for name, architecture in (("dense", Architecture()), ("moe", Architecture(moe_layers=(1, 3), num_experts=4))):
        counts[name] = count_parameters(GPT2Model(4, 512, 32, 4, 16, architecture=architecture))
    return counts


def test_an_moe_model_counts_the_parameters_a_token_runs_through():
    """Top-1 of 4 experts: a token runs through one MLP per layer, as in the dense model, plus the gates
    (hidden x experts each): the FLOPs in the log lines follow this count."""
    counts = _single_rank(_parameter_counts)
    assert counts["moe"] == counts["dense"] + 2 * 32 * 4
