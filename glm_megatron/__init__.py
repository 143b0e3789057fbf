"""glm_megatron: Megatron-style pretraining of the GLM model family on megatron-core."""

import warnings

# megatron-core warns at import time that its optional fused kernels are missing; on CPU that is
# the expected path, so keep it out of every log line a user reads.
warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
warnings.filterwarnings("ignore", message=".*apex.*not installed.*", category=UserWarning)

__version__ = "0.1.0"
