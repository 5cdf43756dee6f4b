"""Data sets and features for training and measuring delta networks.

Nothing here downloads at import time. Raw data are found through ``root=``, else the
``DELTARNN_DATA`` environment variable, else ``~/.cache/deltarnn`` (see :mod:`.root`); derived
files (features, decoded frames) are cached under :func:`cache_dir` (``DELTARNN_CACHE``).

=================  ==========================================  ===================================
module             items                                        splits
=================  ==========================================  ===================================
:mod:`.fsdd`       (features (T, 40), digit int)                by take (usual) or by speaker
:mod:`.digit_strings`  (features (T, 40), labels (L,) 1..10)    spliced within one FSDD split
:mod:`.asterisk`   (features (T, 40), labels (L,) 1..28)        by a hash of the prompt name
:mod:`.steering`   (frames (L, C, H, W) in [0, 1], steering (L,))  by time within each session
=================  ==========================================  ===================================

Batch with :func:`collate_sequences` (classification) or :func:`collate_ctc` (CTC), and
standardise features with a :class:`FeatureNormalizer` fitted on the training split. Training-time
augmentation of audio features (speed perturbation, tempo stretch, SpecAugment masks) is in
:mod:`.augment`; steering labels are smoothed with :func:`smooth_steering`.
"""

from .asterisk import (
    AsteriskDataset,
    Utterance,
    list_utterances,
    load_asterisk,
    normalize_text,
    require_asterisk,
    split_utterances,
)
from .augment import (
    FeatureAugment,
    pick_versions,
    spec_mask,
    speed_perturb,
    speed_perturbed_features,
    time_stretch,
)
from .collate import collate_ctc, collate_sequences, pad_sequences
from .digit_strings import (
    DigitString,
    DigitStringConfig,
    DigitStringDataset,
    load_digit_strings,
    plan_digit_strings,
    synthesize,
)
from .errors import DataIntegrityError, DataNotFoundError, DownloadError
from .feature_splice import FeatureSplicer, SplicedStrings
from .features import (
    FeatureCache,
    FeatureNormalizer,
    FeatureParams,
    UtteranceNormalizer,
    load_audio,
    log_mel,
)
from .fsdd import (
    FSDDDataset,
    Recording,
    Split,
    download_fsdd,
    list_recordings,
    load_fsdd,
    split_by_speaker,
    split_by_take,
)
from .root import cache_dir, data_root
from .steering import (
    SteeringDataset,
    SteeringSession,
    load_frames,
    load_sessions,
    load_steering,
    moving_average,
    smooth_steering,
    temporal_split,
)

__all__ = [
    "AsteriskDataset",
    "DataIntegrityError",
    "DataNotFoundError",
    "DigitString",
    "DigitStringConfig",
    "DigitStringDataset",
    "DownloadError",
    "FSDDDataset",
    "FeatureAugment",
    "FeatureCache",
    "FeatureNormalizer",
    "FeatureParams",
    "FeatureSplicer",
    "Recording",
    "Split",
    "SplicedStrings",
    "SteeringDataset",
    "SteeringSession",
    "Utterance",
    "UtteranceNormalizer",
    "cache_dir",
    "collate_ctc",
    "collate_sequences",
    "data_root",
    "download_fsdd",
    "list_recordings",
    "list_utterances",
    "load_asterisk",
    "load_audio",
    "load_digit_strings",
    "load_frames",
    "load_fsdd",
    "load_sessions",
    "load_steering",
    "log_mel",
    "moving_average",
    "normalize_text",
    "pad_sequences",
    "pick_versions",
    "plan_digit_strings",
    "require_asterisk",
    "smooth_steering",
    "spec_mask",
    "speed_perturb",
    "speed_perturbed_features",
    "split_by_speaker",
    "split_by_take",
    "split_utterances",
    "synthesize",
    "temporal_split",
    "time_stretch",
]
