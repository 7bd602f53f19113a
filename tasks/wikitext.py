"""WikiText: undo the word-level tokenization as published GPT-2 evaluations do, count word-level
tokens, and turn a long token stream into (overlapping) evaluation windows."""

import math
import re

_ESCAPES = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))
_HEADING = re.compile(r"=(?: =)+")                       # "= = Gameplay = =" -> "== Gameplay =="
_QUOTED = re.compile(r'" ([^"]*?) "')                    # '" word "' -> '"word"'
_CLOSING = re.compile(r" ([.,;:!?%)\]}])")               # "word ." -> "word."
_OPENING = re.compile(r"([(\[{]) ")                      # "( word" -> "(word"
_CLITIC = re.compile(r" ('s|'re|'ve|'ll|'d|'m|n't)\b")   # "John 's" -> "John's"
_PLURAL_POSSESSIVE = re.compile(r"s ' ")                 # "players ' union" -> "players' union"


def wikitext_detokenize(text):
    """Wikitext's word-level text as running text, line by line."""
    lines = []
    for line in text.split("\n"):
        line = line.strip()
        for escaped, plain in _ESCAPES:
            line = line.replace(escaped, plain)
        line = _HEADING.sub(lambda match: match.group(0).replace(" ", ""), line)
        line = _QUOTED.sub(r'"\1"', line)
        line = _CLOSING.sub(r"\1", line)
        line = _OPENING.sub(r"\1", line)
        line = _CLITIC.sub(r"\1", line)
        lines.append(_PLURAL_POSSESSIVE.sub("s' ", line))
    return "\n".join(lines)


def word_count(text):
    """Word-level tokens of wikitext's (not detokenized) text: its words, plus one end-of-line per line
    as word-level models score it."""
    return len(text.split()) + text.count("\n")


def adjusted_perplexity(loss, tokens, words):
    """Perplexity per word-level token from the mean loss per BPE-token target: the summed loss is
    spread over words - 1 targets instead of tokens - 1."""
    return math.exp(min(loss * (tokens - 1) / (words - 1), 700.0))


def evaluation_windows(tokens, seq_length, stride=None):
    """[(inputs, targets, scored)] covering every target tokens[1:] exactly once: window i reads
    tokens[i*stride : i*stride + seq_length + 1]; the first window scores all its targets, each later
    one only those that the windows before it did not (its last `stride`). stride < seq_length gives
    every scored token more context; stride = seq_length (default) is non-overlapping."""
    stride = stride or seq_length
    if not 0 < stride <= seq_length:
        raise ValueError(f"--overlapping-eval {stride} must be between 1 and --seq-length {seq_length}")
    targets = len(tokens) - 1
    count = 1 + max(0, math.ceil((targets - seq_length) / stride))
    windows = []
    for i in range(count):
        start = i * stride
        chunk = list(tokens[start:start + seq_length + 1])
        first_new = 0 if i == 0 else seq_length - stride
        windows.append((chunk[:-1], chunk[1:], list(range(first_new, len(chunk) - 1))))
    return windows
