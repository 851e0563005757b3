r"""The embedded default: a small CNN with multi-similarity on `glyphs` (unseen characters at test time).

  python -m metriclearn.main --config=configs/glyphs.py --workdir=/tmp/glyphs

`:smoke` shrinks it to seconds for tests. Result on a 2-core CPU: see README.md ("Results on the embedded default").
"""

import ml_collections

from metriclearn import optim
from metriclearn import search_space


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "glyphs"
  config.seed = 0
  config.num_steps = 600
  config.batch_size = 128
  config.log_every = 20
  config.eval_every = 200
  config.checkpoint_every = 200
  config.max_checkpoints = 2

  config.dataset = dict(name="glyphs", data_dir=ml_collections.config_dict.placeholder(str), kwargs={})
  config.sampler = dict(name="m_per_class", kwargs=dict(m=4))
  config.model = dict(name="small_cnn", embedding_dim=64, pooling="gap", freeze_bn=False,
                      pretrained=ml_collections.config_dict.placeholder(str), kwargs={})
  config.loss = dict(name="multi_similarity", kwargs=dict(alpha=2.0, beta=50.0, base=0.5))
  config.method = dict(name="baseline", kwargs={})
  config.memory = dict(size=0, warmup_steps=0)  # cross-batch memory: off (`metriclearn.memory`)

  config.optimizer = optim.default_config()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.decay_steps = config.get_ref("num_steps")  # follows --config.num_steps overrides
  config.optimizer.warmup_cosine_steps = 0

  config.eval = dict(batch_size=512, ks=(1, 2, 4, 8), metric="cosine", clustering=True, baselines=True, plots=True,
                     utilization=False)

  # What `python -m metriclearn.sweep` searches (format: metriclearn/search_space.py): the learning rate and the
  # margins / scales of whichever loss the recipe (or one built on it) trains with, over the same ranges in every
  # recipe; the mean validation MAP@R over 4 class-disjoint folds of the train classes is the objective.
  config.sweep = search_space.sweep_config(shared="learning_rate,loss", num_folds=4, folds=4)

  if arg == "smoke":
    config.num_steps = 4
    config.batch_size = 32
    config.log_every = 2
    config.eval_every = 2
    config.checkpoint_every = 2
    config.dataset.kwargs = dict(images_per_class=6)
    config.eval.batch_size = 256
    config.sweep.num_folds = 2
    config.sweep.folds = 2
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; valid: 'smoke' or none")
  return config
