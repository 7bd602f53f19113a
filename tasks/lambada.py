"""LAMBADA cloze samples: a passage whose last word is to be predicted, in full, from the rest.

By default the context and the last word are tokenized apart (the word as " word", as it follows a
space); with strict=True the whole passage is tokenized once and the target is every token from the
one where the last word starts, i.e. the word as it is tokenized in its context.
"""

from data_utils.lazy_loader import iter_lines, parse_document


def read_passages(path, text_key="text"):
    """The passages of a lambada_test.jsonl ({"text": ...} per line); a bad line is an error naming it."""
    return [parse_document(line, text_key, path, number) for number, line, _, _ in iter_lines(path)]


def cloze_sample(text, tokenizer, strict=False):
    """(context tokens, last-word tokens) of one passage."""
    text = text.rstrip()
    last_word = text.split()[-1]
    start = len(text) - len(last_word)
    if not strict:
        return tokenizer.tokenize(text[:start].rstrip()), tokenizer.tokenize(" " + last_word)
    tokens = tokenizer.tokenize(text)
    boundary = len(tokens) - 1
    while boundary > 0 and len(tokenizer.detokenize(tokens[:boundary])) > start:
        boundary -= 1
    return tokens[:boundary], tokens[boundary:]


def cloze_window(context, target, seq_length):
    """(inputs, targets, scored positions) reading context + target, scoring the target's positions;
    the context is cut from the left to fit seq_length."""
    tokens = (context + target)[-(seq_length + 1):]
    first = len(tokens) - 1 - len(target)
    if first < 0:
        raise ValueError(f"a target of {len(target)} tokens does not fit {seq_length} positions (--seq-length {seq_length})")
    return tokens[:-1], tokens[1:], list(range(first, len(tokens) - 1))
