"""Pretrain GPT-2: the model, the data and the loss; training.pretrain does the rest.

    python pretrain_gpt2.py                                   # bundled corpus, GPT-2 BPE, one CPU process
    deepspeed --num_gpus 8 pretrain_gpt2.py --data-path data/corpus_text_document \\
        --model-size gpt2-350m --deepspeed --deepspeed_config ds_configs/ds_zero2_bf16.json
    deepspeed --num_gpus 8 pretrain_gpt2.py --pipe-parallel-size 2 --model-parallel-size 2 ... \\
        --deepspeed --deepspeed_config ds_configs/ds_zero1.json    # 3D: TP 2 x PP 2 x DP 2
"""

import torch

import training
from arguments import get_args
from data_utils.gpt2_dataset import build_gpt2_datasets
from model import GPT2Model, gpt2_pipeline, language_model_loss


def model_provider(args, tokenizer):
    """GPT2Model, or its pipeline form (a deepspeed PipelineModule) with --pipe-parallel-size > 1."""
    shape = dict(num_layers=args.num_layers, vocab_size=tokenizer.padded_vocab_size, hidden_size=args.hidden_size,
                 num_attention_heads=args.num_attention_heads, max_sequence_length=args.max_position_embeddings,
                 embedding_dropout=args.hidden_dropout, attention_dropout=args.attention_dropout,
                 hidden_dropout=args.hidden_dropout, init_method_std=args.init_method_std,
                 layernorm_epsilon=args.layernorm_epsilon, checkpoint_activations=args.checkpoint_activations,
                 checkpoint_num_layers=args.checkpoint_num_layers, seed=args.seed)
    if args.pipe_parallel_size > 1:
        return gpt2_pipeline(**shape, partition_method=args.pipe_partition_method)
    return GPT2Model(**shape)


def datasets_provider(args, tokenizer, num_samples):
    """--data-path (preprocessed .bin/.idx, blended by weight), else --train-data (default: the bundled
    sample corpus) tokenized into a cache on first use."""
    return build_gpt2_datasets(training.data_prefixes(args, tokenizer), args.split, num_samples, args.seq_length,
                               args.seed, tokenizer.vocab_size, args.data_cache_dir)


def batch(data_iterator, args):
    """(input tokens, (labels, loss mask)) of the next batch, on every tensor-parallel rank."""
    tokens = training.broadcast_batch(data_iterator, ["text"])["text"]
    inputs, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    loss_mask = (labels != args.eod) if args.eod_mask_loss else torch.ones_like(labels)
    return inputs, (labels, loss_mask)


def forward_step(data_iterator, model, args):
    inputs, labels = batch(data_iterator, args)
    loss = language_model_loss(model(inputs), labels)
    return loss, {"lm loss": loss.item()}


def main(argv=None):
    args = get_args(argv, description=__doc__)
    return training.pretrain(args, datasets_provider, model_provider, forward_step, pipeline_batch=batch)


if __name__ == "__main__":
    main()
