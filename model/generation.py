"""Autoregressive generation from a GPT2Model: greedy, or sampling with temperature, top-k and top-p
(nucleus) filtering; with a key-value cache (each new token runs one position through the model) or
without it (the whole sequence again at every step, as a check on the cache).

At TP > 1 every rank computes the same gathered logits; the token chosen on the first rank of the
tensor-parallel group is sent to the others, so the ranks never drift apart.
"""

import torch
import torch.distributed as dist

import mpu

from .kv_cache import KVCache


def filter_logits(logits, top_k=0, top_p=0.0):
    """Logits [batch, vocab] with everything outside the top_k tokens, and outside the smallest set
    whose probability reaches top_p, set to -inf (0 turns a filter off)."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p > 0.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        probabilities = ordered.softmax(dim=-1)
        before = probabilities.cumsum(dim=-1) - probabilities  # mass of the tokens ranked above each
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_tokens(logits, greedy=False, temperature=1.0, top_k=0, top_p=0.0, generator=None):
    """One token per row of logits [batch, vocab]."""
    if greedy:
        return logits.argmax(dim=-1)
    probabilities = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)


def _same_on_every_tensor_parallel_rank(tokens):
    if mpu.get_model_parallel_world_size() > 1:
        dist.broadcast(tokens, mpu.get_model_parallel_src_rank(), group=mpu.get_model_parallel_group())
    return tokens


@torch.no_grad()
def generate(model, prompt, max_new_tokens, vocab_size, eod=None, use_cache=True, stop=None, **sampling):
    """New tokens for each row of prompt [batch, length] (rows may repeat a prompt, for several
    samples): a list per row, ending before the first end-of-document token `eod`, at most
    max_new_tokens long and never past the model's max_sequence_length. The model must return
    gathered logits (parallel_output=False); ids from vocab_size up (vocabulary padding) are never
    chosen. `stop`, given the new tokens so far [batch, n], says which rows are done (a stop string
    reached); a done row takes `eod` from then on, so it needs one. `sampling`: next_tokens' options."""
    if stop is not None and eod is None:
        raise ValueError("stopping a row early needs an end-of-document token to fill it with")
    budget = min(max_new_tokens, model.max_sequence_length - prompt.size(1))
    cache = KVCache(model.max_sequence_length) if use_cache else None
    tokens, step_input = prompt, prompt
    finished = torch.zeros(prompt.size(0), dtype=torch.bool, device=prompt.device)
    for _ in range(max(budget, 0)):
        logits = model(step_input, cache=cache)[:, -1, :vocab_size]
        new = _same_on_every_tensor_parallel_rank(next_tokens(logits, **sampling))
        if eod is not None:
            new = new.masked_fill(finished, eod)
            finished |= new == eod
        tokens = torch.cat([tokens, new[:, None]], dim=1)
        if stop is not None:
            finished |= stop(tokens[:, prompt.size(1):])
        step_input = new[:, None] if use_cache else tokens
        if finished.all():
            break
    generated = tokens[:, prompt.size(1):].tolist()
    return [row[:row.index(eod)] if eod in row else row for row in generated]
