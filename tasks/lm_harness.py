"""Our GPT-2 as an EleutherAI lm-evaluation-harness model (lm-eval 0.4's `TemplateLM`), so any of its
tasks scores any checkpoint inference.load_gpt2 reads, at any tensor-parallel size.

lm-eval tokenizes with `tok_encode` and splits a context from its continuation the way its own `hf`
model does (trailing spaces of the context move to the continuation; an empty context is the
end-of-document token), so the same requests reach both models:

- `loglikelihood`: context + continuation cut from the left to the model's positions, the
  continuation's summed log-probability and whether greedy decoding would produce it;
- `loglikelihood_rolling`: lm-eval's disjoint rolling windows, each predicting its tokens once;
- `generate_until`: the KV-cache generator, greedy unless `do_sample`, stopping at a stop string, the
  end-of-document token or `max_gen_toks`; requests with equal context lengths and options share a batch.

Every rank of a tensor-parallel group runs the same requests (they compute one model together); with
more processes than --model-parallel-size, lm-eval deals documents to the data-parallel groups
(`rank`/`world_size` here are the data-parallel ones) and gathers their metrics on the first.
"""

import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

import mpu
from model.generation import generate

from .lambada import cloze_window
from .scoring import log_likelihoods

SAMPLING_OPTIONS = ("temperature", "top_k", "top_p")


def _stop_strings(until, end_text):
    until = [until] if isinstance(until, str) else list(until or [])
    return [text for text in until + [end_text] if text]


class HarnessModel(TemplateLM):
    """model: GPT2Model with gathered logits (inference.load_gpt2); tokenizer: our tokenizer."""

    def __init__(self, model, tokenizer, batch_size=8, max_gen_toks=256):
        super().__init__()
        if getattr(tokenizer, "eod", None) is None:
            raise ValueError(f"{tokenizer.name} has no end-of-document token, which lm-eval uses as the context "
                             "of an empty prompt and as the end of generation")
        self.model, self.text_tokenizer = model, tokenizer
        self.batch_size, self.max_gen_toks = batch_size, max_gen_toks
        self._device = torch.device(get_accelerator().current_device_name())
        self._rank, self._world_size = mpu.get_data_parallel_rank(), mpu.get_data_parallel_world_size()
        self.group = mpu.get_data_parallel_group()

    @property
    def eot_token_id(self):
        return self.text_tokenizer.eod

    @property
    def max_length(self):
        return self.model.max_sequence_length

    @property
    def tokenizer_name(self):
        return self.text_tokenizer.name

    def tok_encode(self, string, add_special_tokens=None, **kwargs):
        return self.text_tokenizer.tokenize(string)

    def tok_decode(self, tokens):
        return self.text_tokenizer.detokenize(tokens)

    def _log_likelihoods(self, pairs):
        windows = [cloze_window(context, continuation, self.max_length) for context, continuation in pairs]
        return log_likelihoods(self.model, windows, self.batch_size, self.text_tokenizer.vocab_size)

    def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kwargs):
        results = self._log_likelihoods([(context, continuation) for _, context, continuation in requests])
        for (key, _, _), result in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        pairs, owners = [], []
        for index, (text,) in enumerate(request.args for request in requests):
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                pairs.append((context, continuation))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (log_likelihood, _) in zip(owners, self._log_likelihoods(pairs)):
            totals[owner] += log_likelihood
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def _generation_options(self, gen_kwargs):
        options = dict(gen_kwargs)
        until = _stop_strings(options.pop("until", None), self.tok_decode([self.eot_token_id]))
        max_new = options.pop("max_gen_toks", self.max_gen_toks)
        sampled = options.pop("do_sample", False) and options.get("temperature", 1.0) > 0
        sampling = {name: options.pop(name) for name in SAMPLING_OPTIONS if name in options}
        if options:
            raise ValueError(f"generation options {sorted(options)} are not supported (supported: until, "
                             f"max_gen_toks, do_sample, {', '.join(SAMPLING_OPTIONS)})")
        if sampled:
            sampling = {"temperature": sampling.get("temperature", 1.0), "top_k": sampling.get("top_k") or 0,
                        "top_p": sampling.get("top_p") or 0.0}
        return until, max_new, ({"greedy": False, **sampling} if sampled else {"greedy": True})

    def _stop_at(self, until):
        def stop(new_tokens):
            texts = (self.tok_decode(row) for row in new_tokens.tolist())
            return torch.tensor([any(text_stop in text for text_stop in until) for text in texts],
                                device=new_tokens.device)
        return stop

    def generate_until(self, requests, disable_tqdm=False):
        """Requests with the same context length and options run as one batch; each text is cut at the
        first stop string, as lm-eval's hf model cuts it."""
        groups = {}
        for index, (context, gen_kwargs) in enumerate(request.args for request in requests):
            until, max_new, sampling = self._generation_options(gen_kwargs)
            tokens = self.tok_encode(context) if context else [self.eot_token_id]
            tokens = tokens[-max(self.max_length - max_new, 1):]
            key = (len(tokens), tuple(until), max_new, tuple(sorted(sampling.items())))
            groups.setdefault(key, []).append((index, tokens))
        results = [None] * len(requests)
        for (_, until, max_new, sampling), members in groups.items():
            for first in range(0, len(members), self.batch_size):
                batch = members[first:first + self.batch_size]
                prompt = torch.tensor([tokens for _, tokens in batch], dtype=torch.long, device=self._device)
                generated = generate(self.model, prompt, max_new, self.text_tokenizer.vocab_size,
                                     eod=self.eot_token_id, stop=self._stop_at(until), **dict(sampling))
                for (index, _), new_tokens in zip(batch, generated):
                    text = self.tok_decode(new_tokens)
                    for text_stop in until:
                        text = text.split(text_stop)[0]
                    results[index] = text
                    self.cache_hook.add_partial("generate_until", requests[index].args, text)
        return results

    def all_gather(self, tensor):
        gathered = [torch.zeros_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(gathered, tensor, group=self.group)
        return torch.stack(gathered)

    def gather_object(self, obj, dst=0):
        gathered = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, gathered, dst=dist.get_global_rank(self.group, dst), group=self.group)
        return gathered

    def barrier(self):
        dist.barrier(group=self.group)
