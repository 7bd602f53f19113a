"""Megatron-style tensor model parallelism on torch.distributed (gloo on CPU, nccl on GPU).

Knows nothing of models or data; of DeepSpeed it uses only the accelerator. The module itself can be
passed to `deepspeed.initialize(mpu=mpu)`.
"""

from .cross_entropy import vocab_parallel_cross_entropy
from .data import broadcast_data
from .grads import clip_grad_norm, grad_norm
from .initialize import (
                         destroy_model_parallel,
                         get_data_parallel_group,
                         get_data_parallel_group_ranks,
                         get_data_parallel_rank,
                         get_data_parallel_world_size,
                         get_model_parallel_group,
                         get_model_parallel_rank,
                         get_model_parallel_src_rank,
                         get_model_parallel_world_size,
                         get_pipeline_model_parallel_group,
                         get_pipeline_model_parallel_rank,
                         get_pipeline_model_parallel_world_size,
                         get_tensor_model_parallel_group,
                         get_tensor_model_parallel_rank,
                         get_tensor_model_parallel_src_rank,
                         get_tensor_model_parallel_world_size,
                         initialize_model_parallel,
                         model_parallel_is_initialized,
)
from .layers import ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding
from .mappings import (
                         copy_to_model_parallel_region,
                         gather_from_model_parallel_region,
                         reduce_from_model_parallel_region,
                         scatter_to_model_parallel_region,
)
from .output_cross_entropy import vocab_parallel_output_cross_entropy
from .random import (
                         RNGStatesTracker,
                         checkpoint,
                         get_cuda_rng_tracker,
                         get_rng_tracker,
                         model_parallel_cuda_manual_seed,
                         model_parallel_manual_seed,
                         set_checkpointing_implementation,
)
from .utils import VocabUtility, divide, split_tensor_along_last_dim
