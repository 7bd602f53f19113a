from .bert_model import BertModel
from .gpt2_model import GPT2Model
from .kv_cache import KVCache

__all__ = ["BertModel", "GPT2Model", "KVCache"]
