"""A site whose data fails validation is excluded with a reason that names file, column and rule, never a value.

The site's own validate stage quotes a few offending values of an unprotected column (fine in its own log and
report); the reason the coordinator receives (federation.json, MLflow, the card) must not carry them.
"""

from __future__ import annotations

import pandas as pd
import pytest

from federated.humane_fl import site
from humane.pipeline.params import load_params
from tests.conftest import write_sample
from tests.federated.sites import write_site

PLANTED = 987654  # far outside data.ranges hours-per-week [1, 99]


def test_a_validation_failure_leaves_the_site_without_its_offending_values(tmp_path):
    write_sample(tmp_path / "sample")
    train, test = pd.read_csv(tmp_path / "sample/train.csv"), pd.read_csv(tmp_path / "sample/test.csv")
    train.loc[train.index[:3], "hours-per-week"] = PLANTED
    workspace = write_site(tmp_path / "site", train, test)
    params = load_params(workspace / "params.yaml")
    policy = params.privacy.model_dump(mode="json")
    settings = site.RunSettings(params.preprocess, params.train, 0.5, 100, 10, 0.0, 0, policy)
    with pytest.raises(site.Excluded) as err:
        site.stats(workspace, "site_x", settings)
    reason = err.value.reason
    assert reason.startswith("data validation failed (1 of ")
    assert "'hours-per-week'" in reason and "expect_column_values_to_be_between" in reason
    assert "3 rows" in reason
    assert str(PLANTED) not in reason
    # The site's own report keeps the examples (that is where the person who fixes the data looks).
    assert str(PLANTED) in (workspace / "reports/validation.json").read_text()


def test_a_site_whose_privacy_rules_differ_from_the_coordinators_is_excluded_before_it_reads_its_data(tmp_path):
    write_sample(tmp_path / "sample")
    train, test = pd.read_csv(tmp_path / "sample/train.csv"), pd.read_csv(tmp_path / "sample/test.csv")
    workspace = write_site(tmp_path / "site", train, test)
    params = load_params(workspace / "params.yaml")
    stated = {**params.privacy.model_dump(mode="json"), "drop": ["fnlwgt", "education"]}
    settings = site.RunSettings(params.preprocess, params.train, 0.5, 100, 10, 0.0, 0, stated)
    with pytest.raises(site.Excluded, match=r"privacy: this site's params.yaml privacy differs .* in drop;"):
        site.stats(workspace, "site_x", settings)
    assert not (workspace / "data/interim").exists()  # nothing was loaded
    unsent = site.RunSettings(params.preprocess, params.train, 0.5, 100, 10, 0.0, 0, None)
    with pytest.raises(site.Excluded, match="the coordinator sent no privacy policy"):
        site.stats(workspace, "site_x", unsent)
