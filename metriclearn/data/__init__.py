"""Data sets, samplers and the loader: the host side of the data path (DESIGN §5).

`load_dataset(name)` → a `Dataset` of `Split`s (random-access images and contiguous labels); `make_sampler(name,
labels, batch_size, seed)` → index batches as a pure function of the step; `Loader(split, sampler).iterate(step)` →
prefetched `{"image", "label"}` batches; `eval_batches(split, batch_size)` → fixed-size padded batches for evaluation.
The photo benchmarks (`cub`, `cars`, `sop`, `inshop`) are file-backed (`ImageFiles`, decoded on access with the
`transforms`); `load_dataset(..., val_fold=k)` adds the fair protocol's validation split (`protocols`).
"""

from metriclearn.data.images import ImageFiles
from metriclearn.data.loader import Loader, eval_batches, prefetch, to_float
from metriclearn.data.protocols import carve_validation, class_folds
from metriclearn.data.registry import DATASETS, load_dataset
from metriclearn.data.samplers import SAMPLERS, MPerClassSampler, RandomSampler, make_sampler
from metriclearn.data.splits import Dataset, Split
from metriclearn.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    RandomResizedCrop,
    ResizeCenterCrop,
    ResizeRandomCrop,
)

__all__ = [
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAMPLERS",
    "Dataset",
    "ImageFiles",
    "Loader",
    "MPerClassSampler",
    "Preprocessing",
    "RandomResizedCrop",
    "RandomSampler",
    "ResizeCenterCrop",
    "ResizeRandomCrop",
    "Split",
    "carve_validation",
    "class_folds",
    "eval_batches",
    "load_dataset",
    "make_sampler",
    "prefetch",
    "to_float",
]
