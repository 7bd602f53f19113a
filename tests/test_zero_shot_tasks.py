"""The pieces of zero-shot evaluation on hand-checkable examples: wikitext detokenization, word counts,
the token-ratio adjustment, evaluation windows, LAMBADA samples."""

import math

import pytest

from data_utils.lazy_loader import MalformedJsonError
from data_utils.tokenization import make_tokenizer
from tasks.lambada import cloze_sample, cloze_window, read_passages
from tasks.wikitext import adjusted_perplexity, evaluation_windows, wikitext_detokenize, word_count

WIKITEXT = (" = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : "
            "戦場のヴァルキュリア3 , lit . Valkyria of the Battlefield 3 ) , commonly referred to as Valkyria "
            "Chronicles III outside Japan , is a tactical role @-@ playing video game . \n = = Gameplay = = \n")


def test_wikitext_detokenizer_on_wikitext_lines():
    assert wikitext_detokenize(WIKITEXT) == (
        "= Valkyria Chronicles III =\n\nSenjō no Valkyria 3: Unrecorded Chronicles (Japanese: 戦場のヴァルキュリア3, "
        "lit. Valkyria of the Battlefield 3), commonly referred to as Valkyria Chronicles III outside Japan, is a "
        "tactical role-playing video game.\n== Gameplay ==\n")


@pytest.mark.parametrize("raw, text", [
    (' He said " it \'s 1 @,@ 000 players \' money " . ', 'He said "it\'s 1,000 players\' money".'),
    (" It was 3 @.@ 5 % [ citation ] ; they did n't ! ", "It was 3.5% [citation]; they didn't!"),
    (" = = = Plot = = = ", "=== Plot ==="),
])
def test_wikitext_detokenizer_on_hand_examples(raw, text):
    assert wikitext_detokenize(raw) == text


def test_word_count_counts_an_end_of_line_per_line():
    assert word_count(" = A = \n \n B c . \n") == 3 + 3 + 3  # "= A =", "B c ." and three line ends
    assert word_count(WIKITEXT) == 5 + 40 + 5 + 4  # three lines of words, four line ends


def test_adjusted_perplexity_spreads_the_loss_over_words():
    # 11 BPE tokens (10 targets) at mean loss 2.0 = summed loss 20 over 5 word-level targets
    assert adjusted_perplexity(2.0, tokens=11, words=6) == pytest.approx(math.exp(4.0))
    assert adjusted_perplexity(2.0, tokens=6, words=6) == pytest.approx(math.exp(2.0))


def test_evaluation_windows_by_hand():
    assert evaluation_windows(list(range(10)), 4, 2) == [
        ([0, 1, 2, 3], [1, 2, 3, 4], [0, 1, 2, 3]),
        ([2, 3, 4, 5], [3, 4, 5, 6], [2, 3]),
        ([4, 5, 6, 7], [5, 6, 7, 8], [2, 3]),
        ([6, 7, 8], [7, 8, 9], [2]),
    ]
    assert evaluation_windows(list(range(6)), 8) == [([0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [0, 1, 2, 3, 4])]


@pytest.mark.parametrize("length, seq, stride", [(100, 16, 16), (100, 16, 5), (101, 16, 1), (17, 16, 4), (3, 16, 8)])
def test_evaluation_windows_score_every_target_once_with_its_context(length, seq, stride):
    tokens = list(range(length))
    scored = []
    for inputs, targets, positions in evaluation_windows(tokens, seq, stride):
        assert len(inputs) <= seq and targets == [t + 1 for t in inputs]
        scored += [targets[p] for p in positions]
        assert all(p >= min(seq - stride, len(targets) - 1) or inputs[0] == 0 for p in positions)
    assert scored == tokens[1:]


def test_evaluation_windows_reject_a_stride_longer_than_the_window():
    with pytest.raises(ValueError, match="--overlapping-eval 9"):
        evaluation_windows(list(range(20)), 8, 9)


@pytest.fixture(scope="module")
def gpt2():
    return make_tokenizer("GPT2BPETokenizer")


def test_cloze_sample_predicts_the_whole_last_word(gpt2):
    context, target = cloze_sample("He looked up at the sky and saw the xylophonist", gpt2)
    assert gpt2.detokenize(context) == "He looked up at the sky and saw the"
    assert [gpt2.detokenize([t]) for t in target] == [" x", "yl", "ophon", "ist"]


def test_strict_cloze_sample_takes_the_word_as_tokenized_in_context(gpt2):
    text = "The first line ends here.\nHippopotamus"
    context, target = cloze_sample(text, gpt2, strict=True)
    assert context + target == gpt2.tokenize(text)
    assert gpt2.detokenize(target) == "Hippopotamus"  # after a newline: no leading space, other tokens
    default_context, default_target = cloze_sample(text, gpt2)
    assert gpt2.detokenize(default_context) == "The first line ends here."
    assert gpt2.detokenize(default_target) == " Hippopotamus" and default_target != target
    quoted = 'She said it was "unbelievable'
    assert gpt2.detokenize(cloze_sample(quoted, gpt2, strict=True)[1]) == ' "unbelievable'


def test_cloze_window_scores_the_target_and_cuts_the_context_on_the_left():
    assert cloze_window([1, 2, 3], [4, 5], 8) == ([1, 2, 3, 4], [2, 3, 4, 5], [2, 3])
    assert cloze_window([1, 2, 3, 4, 5], [6, 7], 4) == ([3, 4, 5, 6], [4, 5, 6, 7], [2, 3])
    with pytest.raises(ValueError, match="--seq-length 2"):
        cloze_window([1], [2, 3, 4], 2)


def test_read_passages_names_a_malformed_line(tmp_path):
    path = tmp_path / "lambada_test.jsonl"
    path.write_text('{"text": "one two"}\n{"text": "three\n')
    with pytest.raises(MalformedJsonError, match="lambada_test.jsonl:2"):
        read_passages(str(path))
