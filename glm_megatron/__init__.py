"""glm_megatron: Megatron-style pretraining of the GLM model family on megatron-core."""

import warnings

# megatron-core warns at import time that its optional fused kernels are missing; on CPU that is
# the expected path, so keep it out of every log line a user reads.
warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
warnings.filterwarnings("ignore", message=".*apex.*not installed.*", category=UserWarning)
# torch deprecates the names megatron-core and torch.distributed.pipelining still call; nothing a
# user can act on, printed by every rank.
warnings.filterwarnings("ignore", message=r".*`torch\.distributed\.(all_gather_into_tensor|"
                        r"reduce_scatter_tensor)` is deprecated", category=FutureWarning)


def quiet_device_warnings(device_type: str):
    """megatron-core recommends CUDA_DEVICE_MAX_CONNECTIONS=1 for CUDA streams: meaningless
    off CUDA."""
    if device_type != "cuda":
        warnings.filterwarnings("ignore", message=".*CUDA_DEVICE_MAX_CONNECTIONS.*")

__version__ = "0.1.0"
