"""Pretrain BERT: the model, the data and the loss (masked LM + next-sentence or sentence-order
prediction); training.pretrain does the rest.

    python pretrain_bert.py          # bundled corpus, a SentencePiece model trained on first use, one CPU process
    deepspeed --num_gpus 8 pretrain_bert.py --data-path data/wiki_text_sentence --model-size bert-large \\
        --tokenizer-type BertWordPieceLowerCase --vocab-file bert-large-uncased-vocab.txt \\
        --deepspeed --deepspeed_config ds_configs/ds_bert_lamb.json
"""

import functools

import torch.nn.functional as F

import batches
import mpu
import training
from arguments import get_args
from data_utils.bert_dataset import build_bert_datasets, max_predictions
from data_utils.tfrecord_dataset import build_tfrecord_datasets
from model import BertModel

BATCH_KEYS = ["text", "types", "labels", "loss_mask", "padding_mask", "is_random", "lm_positions"]
DEFAULTS = {"tokenizer_type": "SentencePieceTokenizer", "layernorm_epsilon": 1e-12, "activation": "gelu"}


def model_provider(args, tokenizer):
    return BertModel(num_layers=args.num_layers, vocab_size=tokenizer.padded_vocab_size,
                     hidden_size=args.hidden_size, num_attention_heads=args.num_attention_heads,
                     max_sequence_length=args.max_position_embeddings, embedding_dropout=args.hidden_dropout,
                     attention_dropout=args.attention_dropout, hidden_dropout=args.hidden_dropout,
                     init_method_std=args.init_method_std, layernorm_epsilon=args.layernorm_epsilon,
                     pre_layernorm=args.bert_pre_layernorm, checkpoint_activations=args.checkpoint_activations,
                     checkpoint_num_layers=args.checkpoint_num_layers, ffn_hidden_size=args.ffn_hidden_size,
                     deep_init=args.deep_init, fp32_embedding=args.fp32_embedding,
                     fp32_tokentypes=args.fp32_tokentypes, activation=args.activation,
                     text_vocab_size=tokenizer.vocab_size)


def datasets_provider(args, tokenizer, num_samples):
    """--data-path (sentence-level .bin/.idx, blended by weight), else --train-data (default: the
    bundled sample corpus) split into sentences and tokenized into a cache on first use; with
    --use-tfrecords, --train-data are Google BERT's TFRecord files (masked when they were written)."""
    if args.use_tfrecords:
        return build_tfrecord_datasets(args.train_data, args.split, num_samples, args.seq_length, args.seed,
                                       tokenizer.vocab_size, max_predictions(args.seq_length, args.masked_lm_prob,
                                                                             args.max_preds_per_seq),
                                       args.data_cache_dir)
    build = functools.partial(build_bert_datasets, max_seq_length=args.seq_length, seed=args.seed, tokenizer=tokenizer,
                              cache_dir=args.data_cache_dir, masked_lm_prob=args.masked_lm_prob,
                              max_preds_per_seq=args.max_preds_per_seq, short_seq_prob=args.short_seq_prob,
                              sentence_order=args.sentence_order_prediction)
    return training.build_splits(args, tokenizer, num_samples, build, append_eod=False,
                                 sentences="lines" if args.presplit_sentences else "split")


def get_batch(data_iterator, args):
    batch = batches.broadcast_batch(data_iterator, BATCH_KEYS)
    return batch, batch["loss_mask"].sum()


def forward_step(batch, model, args, loss_tokens):
    """Masked-LM loss as a mean over the global batch's masked positions (see batches.py), its head run on
    those positions only (BertModel.forward); the binary (next-sentence / sentence-order) loss as a mean
    over samples."""
    lm_loss, binary_logits = model(batch["text"], batch["types"], batch["padding_mask"],
                                   masked_lm=(batch["lm_positions"], batch["labels"], batch["loss_mask"], loss_tokens))
    return _with_binary_loss(lm_loss, binary_logits, batch)


def full_head_forward_step(batch, model, args, loss_tokens):
    """forward_step with the masked-LM head on every position and the loss unfused, as it was computed
    before the head ran on the masked positions only: the reference that tests/test_pretrain_bert.py and
    benchmarks/train_throughput.py --shape bert compare with."""
    lm_logits, binary_logits = model(batch["text"], batch["types"], batch["padding_mask"])
    lm_losses = mpu.vocab_parallel_cross_entropy(lm_logits.float(), batch["labels"].clamp(min=0), args.text_vocab_size)
    lm_loss = (lm_losses * batch["loss_mask"].float()).sum() / loss_tokens
    return _with_binary_loss(lm_loss, binary_logits, batch)


def _with_binary_loss(lm_loss, binary_logits, batch):
    nsp_loss = F.cross_entropy(binary_logits.float(), batch["is_random"])
    return lm_loss + nsp_loss, {"lm loss": lm_loss.detach(), "nsp loss": nsp_loss.detach()}


STEPS = training.EntrySteps(get_batch, forward_step)


def main(argv=None):
    args = get_args(argv, description=__doc__, defaults=DEFAULTS, bert=True)
    return training.pretrain(args, datasets_provider, model_provider, STEPS)


if __name__ == "__main__":
    main()
