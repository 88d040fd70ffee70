"""prune_compensate: profile and prune the redundant attention of Hugging Face (V)LMs (ELMM §3.4)."""

from .calibration import CalibrationConfig, CalibrationSample, read_samples
from .checkpoint import load_pruned, read_manifest, save_pruned
from .errors import PCError
from .load import LoadedModel, default_model_path, load_model
from .locate import DecoderLayout, find_decoder
from .profile import LayerProfile, ProfileConfig, ProfileResult, profile
from .prune import PruneConfig, PruneResult, prune_

__version__ = "0.1.0"

__all__ = [
    "CalibrationConfig",
    "CalibrationSample",
    "DecoderLayout",
    "LayerProfile",
    "LoadedModel",
    "PCError",
    "ProfileConfig",
    "ProfileResult",
    "default_model_path",
    "find_decoder",
    "load_model",
    "load_pruned",
    "prune_",
    "PruneConfig",
    "PruneResult",
    "read_manifest",
    "save_pruned",
    "profile",
    "read_samples",
]
