from .gpt2_model import GPT2Model

__all__ = ["GPT2Model"]
