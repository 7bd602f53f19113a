from .bert_model import BertModel
from .gpt2_model import GPT2Model

__all__ = ["BertModel", "GPT2Model"]
