import os

from humane.governance.store import using_tracking_uri


def test_the_store_context_leaves_no_uri_behind(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    with using_tracking_uri(f"sqlite:///{tmp_path / 'x.db'}"):
        assert os.environ["MLFLOW_REGISTRY_URI"].endswith("x.db")
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
