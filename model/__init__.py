from .bert_model import BertModel
from .gpt2_model import GPT2Model, language_model_loss
from .gpt2_pipeline import gpt2_pipeline
from .kv_cache import KVCache

__all__ = ["BertModel", "GPT2Model", "KVCache", "gpt2_pipeline", "language_model_loss"]
