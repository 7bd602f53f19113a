"""The models. Their names are imported on first use, so that importing model.architecture (as the
flag parser and the preprocessing script do) does not import torch and DeepSpeed."""

import importlib

# (the pipeline builder is model.gpt2_pipeline.gpt2_pipeline: its module's name would shadow it here)
_MODULE_OF = {"BertModel": ".bert_model", "GPT2Model": ".gpt2_model", "language_model_loss": ".gpt2_model",
              "KVCache": ".kv_cache"}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
