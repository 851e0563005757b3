"""`metriclearn.tabulate`: means, t-intervals and seed-paired differences of results.json files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from metriclearn import tabulate


def _write(tmp_path, name, seed, **metrics):
  path = tmp_path / f"{name}_{seed}.json"
  path.write_text(json.dumps({"config_name": name, "seed": seed, **metrics}))
  return str(path)


def test_summary_is_the_t_interval_of_the_mean():
  s = tabulate.summarize([0.1, 0.2, 0.4])
  assert s["mean"] == pytest.approx(0.7 / 3)
  assert s["std"] == pytest.approx(np.std([0.1, 0.2, 0.4], ddof=1))
  assert s["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * s["std"] / np.sqrt(3))


def test_paired_differences_pair_by_seed(tmp_path, capsys):
  base = {0: 0.50, 1: 0.60, 2: 0.70}
  method = {2: 0.72, 0: 0.51, 1: 0.63, 5: 0.99}  # seed 5 has no baseline run: left out
  paths = [_write(tmp_path, "base", seed, **{"recall@1": v}) for seed, v in base.items()]
  paths += [_write(tmp_path, "method", seed, **{"recall@1": v}) for seed, v in method.items()]
  groups = tabulate.load_groups(paths)
  text = tabulate.paired_differences(groups, "base", metrics=("recall@1",))
  differences = [0.01, 0.03, 0.02]
  s = tabulate.summarize(differences)
  p_value = stats.ttest_rel([0.51, 0.63, 0.72], [0.50, 0.60, 0.70]).pvalue
  assert f"{s['mean']:+.4f} ± {s['std']:.4f} [±{s['ci95']:.4f}] ({p_value:.2f})" in text
  assert "method" in text and "  3 " in text
  tabulate.main([*paths, "--metrics", "recall@1", "--baseline", "base"])
  assert "difference to base" in capsys.readouterr().out
  with pytest.raises(ValueError, match="baseline 'nope' is not among the groups"):
    tabulate.paired_differences(groups, "nope")
