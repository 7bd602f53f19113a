"""Zero-shot evaluation of GPT-2: wikitext perplexity, LAMBADA cloze accuracy, large-corpus perplexity
(driven by scripts/run_gpt2_eval.py)."""
