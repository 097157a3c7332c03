"""The registered model: an MLflow pyfunc logged as code, holding the privacy policy, preprocessor and weights.

`predict(raw_frame)` takes the raw input columns (no label) and returns, per row, the positive-class
probability, the predicted label, and whether the row lies outside the training-time domain with the rules it
breaks (governance.domain): such a row is scored and flagged, never refused. Numeric inputs are declared as
double in the signature, so JSON clients may send 40, 40.0 or 1e6 alike. The model is logged as code ("models
from code", served_model.py), its files are JSON, skops (explicitly trusted types only) and a torch state dict
read with weights_only=True (torch's restricted loader, which builds tensors and plain containers only): no
pickle of code is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from humane.core.errors import DataError

PROBABILITY, LABEL = "probability", "label"
DECISION = "decision"  # 1 where the label is the positive one: what the metrics and the audit count
OUT_OF_DOMAIN, DOMAIN_RULES = "out_of_domain", "domain_rules"  # the flag and the "; "-joined rules it rests on
ARTIFACT_MODEL, ARTIFACT_PREPROCESSOR, ARTIFACT_POLICY = "model", "preprocessor", "privacy_policy"
ARTIFACT_DOMAIN = "domain"
ARTIFACT_THRESHOLDS = "thresholds"  # per-group thresholds of a post-processed model ({"constraint": "none"} if not)
ARTIFACT_EXPLAINER = "explainer"  # models/explainer.json: attribution reference, excluded columns, counterfactual space
# Predict params (declared with these defaults in the signature) and the output columns they add: `reasons`, the
# top-k columns behind each decision ("; "-joined); `counterfactual`, a refused row's cheapest accepted change (JSON).
REASONS, COUNTERFACTUAL = "reasons", "counterfactual"
EXPLAIN_PARAMS: dict[str, Any] = {REASONS: 0, COUNTERFACTUAL: False}
NO_EXPLAINER = (
    "this model was logged without an explainer (models/explainer.json); it gives no reasons or counterfactuals"
)
MASKED = "<masked>"  # stands in for values of masked or sensitive columns in the logged input example
SERVED_MODEL_FILE = Path(__file__).with_name("served_model.py")


class RequestRefused(DataError, MlflowException):
    """A scoring request the model cannot read: a DataError to Python callers, a 400 to the scoring server's.

    MLflow's server answers an MlflowException with its error code and message; any other exception from `predict`
    becomes a generic 400 carrying the traceback.
    """

    def __init__(self, message: str) -> None:
        MlflowException.__init__(self, message, error_code=INVALID_PARAMETER_VALUE)


# A cell the model cannot read as one value: JSON arrays and objects arrive as these.
NOT_ONE_VALUE = (list, tuple, dict, set, np.ndarray)


def single_values(frame: pd.DataFrame) -> pd.DataFrame:
    """The request, if every cell holds one value (a number, text, a boolean or null).

    Raises:
        DataError: A column holds lists or objects (counted, not quoted: the column may be protected).

    """
    for column in frame.columns:
        if frame[column].dtype == object:
            count = int(frame[column].map(lambda v: isinstance(v, NOT_ONE_VALUE)).sum())
            if count:
                raise DataError(
                    f"request column {column!r}: {count} values are a list or an object, not one number or text "
                    "(values withheld); send one value per cell"
                )
    return frame


class HumaneModel(mlflow.pyfunc.PythonModel):
    """Privacy policy + preprocessing + MLP behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        """Load the policy (JSON), the preprocessor (skops), the network (state dict, weights_only), the domain."""
        domain = context.artifacts.get(ARTIFACT_DOMAIN)  # absent from models logged before domains were shipped
        thresholds = context.artifacts.get(ARTIFACT_THRESHOLDS)  # likewise before post-processing existed
        explainer = context.artifacts.get(ARTIFACT_EXPLAINER)  # likewise before explanations existed
        self.load_files(
            float(context.model_config["threshold"]),
            Path(context.artifacts[ARTIFACT_POLICY]),
            Path(context.artifacts[ARTIFACT_PREPROCESSOR]),
            Path(context.artifacts[ARTIFACT_MODEL]),
            Path(domain) if domain else None,
            Path(thresholds) if thresholds else None,
            Path(explainer) if explainer else None,
        )

    def load_files(
        self,
        threshold: float,
        policy: Path,
        preprocessor: Path,
        model: Path,
        domain: Path | None = None,
        thresholds: Path | None = None,
        explainer: Path | None = None,
    ) -> HumaneModel:
        """Load from the pipeline's own files (what load_context does with the logged copies).

        Without a domain file (a model logged before domains were shipped) no row can be flagged: every row
        comes back with `out_of_domain` false and no rules. Without an explainer file, a request asking for
        reasons or counterfactuals is refused; other requests are answered as before.
        """
        import torch

        from humane.core.io import read_json
        from humane.governance.domain import Domain
        from humane.modeling.features import load_preprocessor
        from humane.modeling.model import load_model
        from humane.privacy.policy import FittedPolicy

        self.threshold = threshold
        # Bins are open at serving even when the load stage ran with strict_bins: one request beyond the edges must
        # not fail a batch; it falls into the outermost bin and the domain flags it.
        self.policy = replace(FittedPolicy.from_dict(read_json(policy)), strict_bins=False)
        self.preprocessor = load_preprocessor(preprocessor)
        self.model = load_model(torch.load(model, weights_only=True))
        self.domain = Domain.from_dict(read_json(domain)) if domain is not None else None
        self.thresholds = read_json(thresholds) if thresholds is not None else {"constraint": "none"}
        self.explanation = None
        if explainer is not None:  # never a reason: what the file says, and whatever this model's policy masks
            masked = {*self.policy.masked_columns, *self.preprocessor.sensitive}
            self.explanation = _Explanation.read(explainer).protecting(masked)
        return self

    @property
    def needs_sensitive(self) -> list[str]:
        """The sensitive columns every request must carry: a post-processed model decides per group."""
        from humane.fairness.thresholds import group_features

        return group_features(self.thresholds)  # fail closed: a post-processed model must name its group columns

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """For each raw row: probability of the positive label, the label, and the domain rules it breaks.

        With the param `reasons` = k > 0, a `reasons` column: the k inputs that pushed the row's score most
        towards its decision ("; "-joined, never a protected column). With `counterfactual` true, a
        `counterfactual` column: for a refused row, the cheapest change of at most two actionable inputs that the
        model accepts (JSON, holding the row's own values of the changed columns: for the requester only), empty
        for an accepted row or where none is found. Without these params the columns are exactly as before.

        Raises:
            RequestRefused: The request cannot be read (a cell holding a list or an object, text in a numeric
                input, a missing group column), or asks for reasons from a model logged without an explainer: a
                DataError naming the column and the rule, which the scoring server answers with a 400 carrying
                that message and no traceback.

        """
        try:
            reasons, counterfactual = self._explain_params(params)
            raw, rules = self._inputs(single_values(pd.DataFrame(model_input)))
            masked, x = self._features(raw)
            p, positive = self._decide(masked, x)
            scored = self._output(p, positive, rules)
            if reasons:
                scored[REASONS] = self._reasons(x, positive, reasons)
            if counterfactual:
                scored[COUNTERFACTUAL] = self._counterfactuals(raw, positive)
            return scored
        except DataError as err:
            raise RequestRefused(str(err)) from None

    def attribute(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per raw row, each input column's attribution to its logit (rows x explainer columns), for monitoring.

        The rows take the path scoring takes (domain types, privacy policy, preprocessor); the attributions are
        the explainer's (humane.modeling.attribution.attribute), summed back to the raw columns.

        Raises:
            DataError: The model was logged without an explainer, or the rows cannot be read.

        """
        from humane.modeling.attribution import attribute

        if self.explanation is None:
            raise DataError(NO_EXPLAINER)
        raw, _ = self._inputs(single_values(pd.DataFrame(frame)), groups=False)
        _, x = self._features(raw)
        values = attribute(self.model, self.explanation.attribution, x)
        return pd.DataFrame(values, columns=self.explanation.attribution.columns, index=frame.index)

    def _explain_params(self, params: dict[str, Any] | None) -> tuple[int, bool]:
        """The request's `reasons` (k >= 0) and `counterfactual`; refused if asked of a model without an explainer."""
        given = {**EXPLAIN_PARAMS, **(params or {})}
        reasons, counterfactual = given[REASONS], given[COUNTERFACTUAL]
        if isinstance(reasons, bool) or not isinstance(reasons, (int, np.integer)) or reasons < 0:
            raise DataError(f"param {REASONS!r}: the number of reasons per row, an integer >= 0 (0: none)")
        if not isinstance(counterfactual, (bool, np.bool_)):
            raise DataError(f"param {COUNTERFACTUAL!r}: true or false")
        if (reasons or counterfactual) and self.explanation is None:
            raise DataError(NO_EXPLAINER)
        return int(reasons), bool(counterfactual)

    def _inputs(self, frame: pd.DataFrame, groups: bool = True) -> tuple[pd.DataFrame, list[list[str]]]:
        """The request typed as the model was fitted, and per row the domain rules it breaks.

        Args:
            frame: The request's rows.
            groups: Whether the rows must carry the sensitive columns a post-processed model decides by.

        """
        from humane.governance.domain import as_model_input, broken_rules

        rules: list[list[str]] = [[] for _ in range(len(frame))]
        if self.domain is not None:
            frame = as_model_input(self.domain, frame)
            # Judged on the raw values, before the policy bins or caps them (97 is above Adult's ages, 70+ is not).
            rules = broken_rules(self.domain, frame)
        missing = [c for c in self.needs_sensitive if c not in frame.columns] if groups else []
        if missing:
            raise DataError(
                f"the request lacks the sensitive column(s) {missing}: this model was post-processed for "
                f"{self.thresholds['constraint']} and decides with per-group thresholds, so every row must say its "
                "group (the column is read for the threshold only, never as a model input)"
            )
        return frame, rules

    def _features(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
        """The rows after the privacy policy, and their model inputs (a float32 tensor)."""
        import torch

        from humane.privacy.policy import apply_policy

        # The same masking as training: requests may carry raw values; identifiers are never inputs.
        frame = apply_policy(self.policy, frame.drop(columns=self.policy.pseudonymize, errors="ignore"), key=None)
        return frame, torch.from_numpy(self.preprocessor.transform(frame))

    def _decide(self, frame: pd.DataFrame, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Positive-class probability and decision per row (per-group thresholds of a post-processed model)."""
        import torch

        from humane.modeling.model import probabilities

        with torch.inference_mode():
            p = probabilities(self.model(x)).numpy().astype(np.float64)
        from humane.core.protected import sensitive_name
        from humane.fairness.thresholds import served_decisions

        # The group columns a post-processed model's thresholds read (none for a model deciding by p >= threshold),
        # as sent: the thresholds' group_keys read them as group_labels (group_text: 1, 1.0 and "1" are "1").
        groups = pd.DataFrame({sensitive_name(c): frame[c].to_numpy() for c in self.needs_sensitive})
        return p, served_decisions(p, groups, self.thresholds, x.numpy(), self.threshold)

    def _output(self, p: np.ndarray, positive: np.ndarray, rules: list[list[str]]) -> pd.DataFrame:
        from humane.governance.domain import SEPARATOR

        labels = self.preprocessor.labels
        negative = next(label for label in labels if label != self.preprocessor.positive_label)
        predicted = np.where(positive, self.preprocessor.positive_label, negative)
        return pd.DataFrame(
            {
                PROBABILITY: p,
                LABEL: predicted,
                DECISION: positive.astype(np.int64),
                OUT_OF_DOMAIN: [bool(r) for r in rules],
                DOMAIN_RULES: [SEPARATOR.join(r) for r in rules],
            }
        )

    def _reasons(self, x: Any, positive: np.ndarray, k: int) -> list[str]:
        """Per row, its top-k reason codes "; "-joined: inputs that pushed towards its decision, none protected."""
        from humane.governance.domain import SEPARATOR
        from humane.modeling.attribution import attribute, reason_codes

        explanation = self.explanation
        values = attribute(self.model, explanation.attribution, x)
        codes = reason_codes(values, positive, explanation.attribution.columns, explanation.excluded, k)
        return [SEPARATOR.join(row) for row in codes]

    def _counterfactuals(self, raw: pd.DataFrame, positive: np.ndarray) -> list[str]:
        """Per refused row, its counterfactual as JSON text ("" for an accepted row or where none is found)."""
        import json

        from humane.modeling.counterfactual import search

        out = [""] * len(raw)
        refused = np.flatnonzero(~positive)
        if not len(refused):
            return out
        frozen = self.explanation.excluded | set(self.needs_sensitive)
        found = search(raw.iloc[refused], self._decide_rows, self.explanation.space, frozen=frozen)
        for i, one in zip(refused, found, strict=True):
            out[i] = json.dumps(one) if one is not None else ""
        return out

    def _decide_rows(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(decision, probability) per typed raw row through the served path: what a counterfactual must flip."""
        p, positive = self._decide(*self._features(frame))
        return positive, p


@dataclass(frozen=True)
class _Explanation:
    """What serving reads from models/explainer.json.

    Attributes:
        attribution: The attribution settings (reference row, column map, method).
        excluded: The columns never given as a reason (protected: masked or sensitive).
        space: What a counterfactual may change.

    """

    attribution: Any  # humane.modeling.attribution.Explainer
    excluded: frozenset[str]
    space: Any  # humane.modeling.counterfactual.CounterfactualSpace

    @classmethod
    def read(cls, path: Path) -> _Explanation:
        """Read and check the file; one that is not an explainer file raises DataError (fail closed)."""
        from humane.core.io import read_json
        from humane.modeling.attribution import Explainer
        from humane.modeling.counterfactual import CounterfactualSpace

        payload = read_json(path)
        keys = {"attribution", "excluded", "counterfactual"}
        if not isinstance(payload, dict) or not keys <= set(payload) or not isinstance(payload["excluded"], list):
            raise DataError(f"{path.name}: not an explainer file (expected the keys {sorted(keys)})")
        excluded = frozenset(str(c) for c in payload["excluded"])
        return cls(
            Explainer.from_dict(payload["attribution"]),
            excluded,
            CounterfactualSpace.from_dict(payload["counterfactual"]),
        )

    def protecting(self, columns: set[str]) -> _Explanation:
        """The same explanation with `columns` never a reason; refused if its counterfactuals may change one."""
        changeable = set(self.space.columns) & columns
        if changeable:
            raise DataError(f"the explainer's counterfactuals may change protected columns {sorted(changeable)}")
        return replace(self, excluded=self.excluded | frozenset(columns))


def input_example(
    frame: pd.DataFrame, inputs: list[str], masked: set[str], placeholders: dict[str, Any] | None = None
) -> pd.DataFrame:
    """One synthetic row with the model's input columns and types, quoting nobody.

    Each column takes its most common value, except masked and sensitive columns: their `placeholders` entry
    (e.g. a binned column's lowest edge, so the request passes the privacy policy) or 0 for numbers, MASKED
    (an unknown category to the model) for text. Numbers are float64 (booleans stay booleans), so that the
    signature inferred from the example declares them double: a client may send 40, 40.0 or 1e6.
    """
    row: dict[str, Any] = {}
    for column in inputs:
        values = frame[column].dropna()
        if pd.api.types.is_numeric_dtype(frame[column]):
            if column in masked or not len(values):
                row[column] = (placeholders or {}).get(column, 0)
            else:
                row[column] = values.mode().iloc[0]
        else:
            row[column] = MASKED if column in masked or not len(values) else values.mode().iloc[0]
    example = pd.DataFrame([row])
    for column in inputs:
        if pd.api.types.is_bool_dtype(frame[column]):
            example[column] = example[column].astype(bool)
        elif pd.api.types.is_numeric_dtype(frame[column]):
            example[column] = example[column].astype(np.float64)
    return example


def as_request(frame: pd.DataFrame, schema: Any) -> pd.DataFrame:
    """Rows from Python typed as a pyfunc's input signature declares its floating-point columns.

    The scoring server casts JSON to the signature's types, but `PyFuncModel.predict` does not: it refuses
    int64 for a double column ("Can not safely convert int64 to float64"). Integer columns the signature
    declares double (or float) are cast here; anything else is left for MLflow's schema enforcement to judge.

    Args:
        frame: Raw rows, e.g. read from CSV or Parquet (integer-looking columns come back int64).
        schema: The model's input schema (`model.metadata.get_input_schema()`), an `mlflow.types.Schema`.

    """
    from mlflow.types import DataType

    out = frame.copy()
    for spec in schema.inputs:
        if spec.name in out and spec.type in (DataType.double, DataType.float):
            values = out[spec.name]
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                out[spec.name] = values.astype(spec.type.to_numpy())
    return out


def champion_uri(
    name: str, project: Path | None = None, uri: str | None = None, require_signoff: bool | None = None
) -> str:
    """`models:/NAME/<version>` of the champion once its decision and sign-off verify against the audit trail.

    What to load or serve instead of `models:/NAME@champion`: the alias is read once, the version behind it is
    verified (humane.governance.approvals.verified_champion: its recorded checks passed, its approval holds on
    its current decision where a sign-off is required or was asked, and the trail's last move of the alias names
    it), and the version number is returned, so that the alias cannot move between the check and the load.

    Args:
        name: The registered model, e.g. `humane-adult`.
        project: The project folder whose audit trail (audit/signoff.jsonl) and params.yaml apply; default: the
            working directory.
        uri: The MLflow store; default: MLFLOW_TRACKING_URI, else the project's SQLite store.
        require_signoff: Whether the champion must hold an approval; default: params.yaml's
            `gate.require_approval` (False without a params.yaml). Team mode always requires it.

    Raises:
        ChampionNotVerified: the champion does not verify; the message names what is missing.
        HumaneError: the model has no champion.

    """
    from humane.core.context import RunContext
    from humane.core.errors import HumaneError
    from humane.governance.approvals import verified_champion

    project = Path.cwd() if project is None else Path(project)
    uri = uri or RunContext(project).tracking_uri
    if require_signoff is None:
        require_signoff = _requires_approval(project)
    champion = verified_champion(uri, project, name, require_signoff)
    if champion is None:
        raise HumaneError(f"registry: model {name!r} has no champion version; there is nothing to serve")
    return f"models:/{name}/{champion.version}"


def load_champion(
    name: str, project: Path | None = None, uri: str | None = None, require_signoff: bool | None = None
) -> Any:
    """The verified champion's pyfunc (`champion_uri`), loaded by its version number from the store.

    Its files are downloaded and checked against the manifest recorded at registration before anything of it
    is loaded or run (humane.governance.registry.load_verified); a changed file is refused by name
    (IntegrityFailed, exit 12).
    """
    from humane.core.context import RunContext
    from humane.governance.registry import load_verified
    from humane.governance.store import server_calls

    project = Path.cwd() if project is None else Path(project)
    uri = uri or RunContext(project).tracking_uri
    with server_calls(uri):  # bounded retries (HUMANE_SERVER_RETRY_S), then one clear line
        version = champion_uri(name, project, uri, require_signoff).rsplit("/", 1)[1]
        return load_verified(uri, name, version)


def _requires_approval(project: Path) -> bool:
    """params.yaml's `gate.require_approval` in the project (False where the folder has no params.yaml).

    Serving reads and checks the `gate:` section only (a bad or missing one is an error, never False): the rest of
    params.yaml is the pipeline's to check when a stage runs.
    """
    from humane.core.params import read_section
    from humane.core.paths import Paths
    from humane.governance.params import GateParams

    path = Paths(project).params
    return read_section(path, "gate", GateParams).require_approval if path.exists() else False


def checked_copy(name: str, version: str, dest: Path) -> Path:
    """The version's files in `dest` (new or empty), checked against its manifest; nothing left there if not.

    Downloaded beside `dest` and moved into place only once every file verifies, so a folder named `dest` holds
    checked files or nothing.
    """
    import shutil
    import tempfile

    from humane.core.context import RunContext
    from humane.core.errors import ConfigError
    from humane.governance.registry import verified_model_files

    dest = dest.resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"--files {dest}: exists and is not an empty folder; name a new one")
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".humane-download-", dir=dest.parent))
    try:
        folder = verified_model_files(RunContext(Path.cwd()).tracking_uri, name, version, scratch)
        if dest.exists():
            dest.rmdir()
        folder.rename(dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dest


def main(argv: list[str]) -> int:
    """`python -m humane.governance.serving NAME [--files DIR]`: the verified champion, for `mlflow models serve`.

    With `--files DIR`: the champion's files downloaded into DIR (new or empty) and checked against the manifest
    recorded at registration; prints DIR, to serve with `mlflow models serve -m DIR`, so that what runs is what was
    checked. Without: prints `models:/NAME/<version>` (its decision and sign-off verified, its files not: the server
    downloads them again). Nothing on stdout and the error's exit code (2, 10, 11, 12) with the reason on stderr
    when there is no champion, it does not verify, or a file changed after registration.
    """
    import argparse
    import sys

    from humane.core.context import RunContext
    from humane.core.errors import HumaneError
    from humane.governance.store import server_calls

    parser = argparse.ArgumentParser(prog="python -m humane.governance.serving")
    parser.add_argument("name", help="the registered model, e.g. humane-adult")
    parser.add_argument("--files", type=Path, help="download the champion's checked files into this new folder")
    args = parser.parse_args(argv)
    try:
        with server_calls(RunContext(Path.cwd()).tracking_uri):  # bounded retries, then one clear line
            verified = champion_uri(args.name)
            if args.files is not None:
                verified = str(checked_copy(args.name, verified.rsplit("/", 1)[1], args.files))
    except HumaneError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(verified)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
