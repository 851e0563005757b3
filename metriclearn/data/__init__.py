"""Data sets, samplers and the loader: the host side of the data path (DESIGN §5).

`load_dataset(name)` → a `Dataset` of `Split`s (random-access images and contiguous labels); `make_sampler(name,
labels, batch_size, seed)` → index batches as a pure function of the step; `Loader(split, sampler).iterate(step)` →
prefetched `{"image", "label"}` batches; `eval_batches(split, batch_size)` → fixed-size padded batches for evaluation.
"""

from metriclearn.data.loader import Loader, eval_batches, prefetch, to_float
from metriclearn.data.registry import DATASETS, load_dataset
from metriclearn.data.samplers import SAMPLERS, MPerClassSampler, RandomSampler, make_sampler
from metriclearn.data.splits import Dataset, Split

__all__ = [
    "DATASETS",
    "SAMPLERS",
    "Dataset",
    "Loader",
    "MPerClassSampler",
    "RandomSampler",
    "Split",
    "eval_batches",
    "load_dataset",
    "make_sampler",
    "prefetch",
    "to_float",
]
