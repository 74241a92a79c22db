"""torch-elmo: ELMo (Peters et al., 2018) in current PyTorch, computing exactly what the original
bilm-tf computes from the published options.json + weights.hdf5."""

from .chars import batch_to_ids
from .default import default_model_files
from .efml import EfmlBiLM, EfmlFormatError, load_efml
from .elmo import Elmo, ElmoEmbedder
from .errors import DefaultModelMissing, ElmoError, ElmoFormatError
from .formats import load_bilm, read_options, save_bilm
from .model import BiLM, BiLMConfig, CharCNN, Highway, LstmWithProjection, ScalarMix, remove_sentence_boundaries

__all__ = [
    "BiLM", "BiLMConfig", "CharCNN", "DefaultModelMissing", "Elmo", "ElmoEmbedder", "ElmoError", "ElmoFormatError",
    "Highway", "EfmlBiLM", "EfmlFormatError", "load_efml",  # ELMoForManyLangs models (efml.py)
    "LstmWithProjection", "ScalarMix", "batch_to_ids", "load_bilm", "read_options",
    "default_model_files", "remove_sentence_boundaries", "save_bilm",
]
__version__ = "0.1.0"
