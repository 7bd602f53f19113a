"""Pretrain GPT-2: the model, the data and the loss; training.pretrain does the rest.

    python pretrain_gpt2.py                                   # bundled corpus, GPT-2 BPE, one CPU process
    deepspeed --num_gpus 8 pretrain_gpt2.py --data-path data/corpus_text_document \\
        --model-size gpt2-350m --deepspeed --deepspeed_config ds_configs/ds_zero2_bf16.json
    deepspeed --num_gpus 8 pretrain_gpt2.py --pipe-parallel-size 2 --model-parallel-size 2 ... \\
        --deepspeed --deepspeed_config ds_configs/ds_zero1.json    # 3D: TP 2 x PP 2 x DP 2
"""

import functools

import torch

import batches
import training
from arguments import get_args
from data_utils.gpt2_dataset import build_gpt2_datasets
from model import GPT2Model
from model.architecture import architecture_from_args
from model.documents import document_attention_mask, document_ids, document_position_ids
from model.gpt2_pipeline import gpt2_pipeline
from model.moe import moe_aux_loss


def model_provider(args, tokenizer):
    """GPT2Model, or its pipeline form (a deepspeed PipelineModule) with --pipe-parallel-size > 1."""
    shape = dict(num_layers=args.num_layers, vocab_size=tokenizer.padded_vocab_size, hidden_size=args.hidden_size,
                 num_attention_heads=args.num_attention_heads, max_sequence_length=args.max_position_embeddings,
                 embedding_dropout=args.hidden_dropout, attention_dropout=args.attention_dropout,
                 hidden_dropout=args.hidden_dropout, init_method_std=args.init_method_std,
                 layernorm_epsilon=args.layernorm_epsilon, checkpoint_activations=args.checkpoint_activations,
                 checkpoint_num_layers=args.checkpoint_num_layers, seed=args.seed, ffn_hidden_size=args.ffn_hidden_size,
                 architecture=architecture_from_args(args))
    if args.pipe_parallel_size > 1:
        return gpt2_pipeline(**shape, partition_method=args.pipe_partition_method, text_vocab_size=tokenizer.vocab_size)
    return GPT2Model(**shape, text_vocab_size=tokenizer.vocab_size)


def datasets_provider(args, tokenizer, num_samples):
    """--data-path (preprocessed .bin/.idx, blended by weight), else --train-data (default: the bundled
    sample corpus) tokenized into a cache on first use."""
    build = functools.partial(build_gpt2_datasets, seq_length=args.seq_length, seed=args.seed,
                              vocab_size=tokenizer.vocab_size, cache_dir=args.data_cache_dir)
    return training.build_splits(args, tokenizer, num_samples, build)


def get_batch(data_iterator, args):
    """((input tokens, (labels, loss mask), model options), loss-bearing tokens) of the next micro-batch,
    on every tensor-parallel rank. --eod-mask-loss drops the loss where the input is end-of-document
    (the first token of the next document, which nothing before it predicts), as Megatron-LM does;
    --reset-position-ids and --reset-attention-mask keep the documents of a sample apart (model.documents)."""
    tokens = batches.broadcast_batch(data_iterator, ["text"])["text"]
    inputs, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    loss_mask = (inputs != args.eod) if args.eod_mask_loss else torch.ones_like(labels)
    options = {}
    if args.reset_position_ids or args.reset_attention_mask:
        documents = document_ids(inputs, args.eod)
        if args.reset_position_ids:
            options["position_ids"] = document_position_ids(documents)
        if args.reset_attention_mask:
            options["attention_mask"] = document_attention_mask(documents)
    return (inputs, (labels, loss_mask), options), loss_mask.sum()


def forward_step(batch, model, args, loss_tokens):
    inputs, (labels, loss_mask), options = batch
    loss = model(inputs, labels=(labels, loss_mask, loss_tokens), **options)
    values = {"lm loss": loss.detach()}
    balance = moe_aux_loss(model)
    if balance is not None:  # mixture of experts: the gates' load-balancing loss joins the objective
        values["moe loss"] = balance.detach()
        loss = loss + args.moe_loss_coeff * balance
    return loss, values


STEPS = training.EntrySteps(get_batch, forward_step, has_pipeline_form=True)


def main(argv=None):
    args = get_args(argv, description=__doc__)
    return training.pretrain(args, datasets_provider, model_provider, STEPS)


if __name__ == "__main__":
    main()
