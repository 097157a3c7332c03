"""Column privacy policy: drop, pseudonymize (keyed HMAC), generalize (bins, top-codes, rare groups)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import numbers
import os
import unicodedata
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from humane.core.errors import ConfigError, DataError, ServerUnavailable
from humane.core.paths import Paths
from humane.privacy.params import DatasetColumns, PrivacyParams

OTHER = "Other"  # the category that rare values are grouped into
WITHHELD = "values withheld: the column is masked by the privacy policy"  # errors never quote a masked column's values


@dataclass(frozen=True)
class FittedPolicy:
    """The policy plus what it learned from the train pool (which categories are common enough to keep)."""

    drop: list[str]
    pseudonymize: list[str]
    bins: dict[str, list[float]]
    top_code: dict[str, float]
    kept_categories: dict[str, list[str]] = field(default_factory=dict)
    # Strict: a value beyond the bins' edges is an error; otherwise it falls into the outermost bin.
    strict_bins: bool = False

    @property
    def masked_columns(self) -> list[str]:
        """Columns whose raw values never leave the load stage."""
        return [*self.drop, *self.pseudonymize, *self.bins, *self.top_code, *self.kept_categories]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (no key, no raw values beyond the kept category names)."""
        return {
            "drop": self.drop,
            "pseudonymize": self.pseudonymize,
            "bins": self.bins,
            "top_code": self.top_code,
            "kept_categories": self.kept_categories,
            "strict_bins": self.strict_bins,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> FittedPolicy:
        """Inverse of to_dict (a policy written before `strict_bins` existed reads as open bins)."""
        return cls(**payload)


def check_policy(params: PrivacyParams) -> None:
    """A column may have one rule only (`keep` may go with a generalisation); bins must be increasing."""
    seen: dict[str, str] = {}
    rules = {
        "drop": params.drop,
        "pseudonymize": params.pseudonymize,
        "bins": params.bins,
        "top_code": params.top_code,
        "group_rare": params.group_rare,
    }
    for rule, columns in rules.items():
        for column in columns:
            if column in seen:
                raise ConfigError(f"privacy: column {column!r} has two rules ({seen[column]} and {rule})")
            seen[column] = rule
    for column in params.keep:
        if seen.get(column) in ("drop", "pseudonymize"):
            raise ConfigError(f"privacy: column {column!r} has two rules ({seen[column]} and keep)")
    for column, edges in params.bins.items():
        if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ConfigError(f"privacy.bins.{column}: edges must be at least two increasing numbers, got {edges}")


def pseudonym_key(params: PrivacyParams) -> bytes | None:
    """The HMAC key from the environment variable, else from the Prefect Secret block; required if used."""
    if not params.pseudonymize:
        return None
    value = os.environ.get(params.key_env)
    if not value and params.key_block:
        value = _secret_block(params.key_block)
    if not value:
        source = f"environment variable {params.key_env}" + (
            f" or Prefect Secret block {params.key_block!r}" if params.key_block else ""
        )
        raise ConfigError(
            f"privacy.pseudonymize lists {params.pseudonymize} but no key is set: put the HMAC key in the {source}"
        )
    return value.encode()


def _secret_block(name: str, setting: str = "privacy.key_block") -> str | None:
    """The value of the Prefect Secret block `name`; None when the Prefect API says there is no such block.

    `setting` is the params key that names the block, as the errors name it.

    Raises:
        ServerUnavailable: The Prefect API could not be asked (unreachable, or an error): the message names the
            block and PREFECT_API_URL, and is distinct from "no key is set".
        ConfigError: The block exists but cannot be read as a Secret.

    """
    import httpx
    from prefect.blocks.system import Secret
    from prefect.exceptions import ObjectNotFound, PrefectException
    from prefect.settings import PREFECT_API_URL

    try:
        return Secret.load(name).get()
    except ValueError as err:
        if isinstance(err.__cause__, ObjectNotFound):
            return None  # the caller names both places to put the key
        raise ConfigError(f"{setting}: Prefect block {name!r} is not a readable Secret: {err}") from None
    except (httpx.HTTPError, PrefectException, OSError, RuntimeError) as err:  # the API's failure, not "no key"
        raise ServerUnavailable(
            f"{setting}: cannot read the Prefect Secret block {name!r}: the Prefect API at PREFECT_API_URL="
            f"{_without_credentials(PREFECT_API_URL.value())} did not answer ({type(err).__name__}: {err})"
        ) from None


def _without_credentials(url: str | None) -> str:
    """A URL as it may be printed: any user and password it embeds left out."""
    if not url:
        return "(unset)"
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def canonical_text(value: Any) -> str | None:
    """The text a value is pseudonymized as, so that one identifier written in different types is one pseudonym.

    - Missing (None, NaN, NA, NaT) is None, and so is a string that is blank after stripping: no identifier.
    - Booleans are "True" / "False".
    - Integers (Python or NumPy) are their decimal text; a float with an integral value is written as that
      integer (123, 123.0, np.int64(123) and np.float32(123) are all "123"); other floats are their shortest
      round-trip text ("0.5", "inf").
    - Strings are Unicode NFC-normalised with surrounding whitespace stripped; case is kept, and a string is
      never parsed as a number: "123" equals 123, but "007" stays distinct from 7 and "123.0" from 123
      (leading zeros and formatting can be part of an identifier).
    - Anything else is its `str()`.
    """
    if value is None or (not isinstance(value, (str, bytes)) and _scalar_missing(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        return str(int(number)) if number.is_integer() else str(value)
    if isinstance(value, str):
        text = unicodedata.normalize("NFC", value).strip()
        return text or None
    return str(value)


def _scalar_missing(value: Any) -> bool:
    missing = pd.isna(value)
    return isinstance(missing, (bool, np.bool_)) and bool(missing)


def pseudonymize(values: pd.Series, key: bytes) -> pd.Series:
    """Keyed HMAC-SHA256 of each value's canonical text (`canonical_text`; missing stays null).

    Same key and same canonical text, same pseudonym; no key, no reversal.
    """

    def one(value: Any) -> Any:
        text = canonical_text(value)
        return None if text is None else hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    return values.map(one).astype("object")


def absent_columns(params: PrivacyParams, pool: pd.DataFrame) -> list[str]:
    """Policy columns this data does not have (the policy written for one dataset, run on another)."""
    named = [*params.drop, *params.keep, *params.bins, *params.top_code, *params.group_rare, *params.quasi_identifiers]
    return sorted({c for c in named if c not in pool})


@dataclass(frozen=True)
class ProtectedColumns:
    """The columns whose raw values never leave the load stage, by kind (see `protected_columns`).

    No report, store, log or error message quotes a raw value of any of them, and no schema written outside
    the load stage lists the values it learned from their data; counts and sizes are reported instead.

    Attributes:
        masked: Dropped, pseudonymized or generalised (binned, top-coded, rare groups merged) by the policy.
        sensitive: The sensitive features (their groups are named in aggregates only, by the audits).
        kept: Kept on purpose although they look identifying (privacy.keep): stored as loaded.
        dates: Date columns (data.dates): the values derived from them are a person's dates.

    """

    masked: frozenset[str]
    sensitive: frozenset[str]
    kept: frozenset[str]
    dates: frozenset[str]

    @property
    def all(self) -> frozenset[str]:
        """Every protected column, whatever its kind."""
        return self.masked | self.sensitive | self.kept | self.dates

    @property
    def unmasked(self) -> frozenset[str]:
        """Kept and date-derived columns: stored as loaded (not generalised) and not needed to audit groups."""
        return (self.kept | self.dates) - self.sensitive


def protected_columns(
    privacy: PrivacyParams, data: DatasetColumns, fitted: dict[str, Any] | None = None
) -> ProtectedColumns:
    """The one definition of the columns whose raw values never leave the load stage.

    Args:
        privacy: The privacy section: drop, pseudonymize, bins, top_code and group_rare mask; keep keeps.
        data: The data section: its sensitive features and its date columns (data.dates).
        fitted: The fitted policy as the load stage wrote it (`FittedPolicy.to_dict`), when there is one: its
            columns are added (a policy written by another run of the parameters still protects its own).

    Raises:
        DataError: `fitted` has an unknown or missing rule: a rule that cannot be read could be a column left
            unprotected, so this fails closed.

    """
    masked = {*privacy.drop, *privacy.pseudonymize, *privacy.bins, *privacy.top_code, *privacy.group_rare}
    if fitted is not None:
        try:
            masked |= set(FittedPolicy.from_dict(fitted).masked_columns)
        except TypeError as err:
            raise DataError(
                f"{Paths.privacy_policy}: not a fitted privacy policy (expected the keys drop, pseudonymize, bins, "
                f"top_code, kept_categories): {err}"
            ) from None
    return ProtectedColumns(_names(masked), _names(data.sensitive_features), _names(privacy.keep), _names(data.dates))


def _names(columns: Any) -> frozenset[str]:
    return frozenset(str(c) for c in columns)


def fit_policy(params: PrivacyParams, pool: pd.DataFrame) -> FittedPolicy:
    """Keep the rules whose columns exist; learn which categories of a `group_rare` column are common enough.

    A pseudonymize rule on a missing column is an error: it names an identifier the owner expects masked.
    """
    check_policy(params)
    missing = [c for c in params.pseudonymize if c not in pool]
    if missing:
        raise DataError(f"privacy.pseudonymize: columns {missing} are not in the data")
    kept = {}
    for column, min_count in params.group_rare.items():
        if column in pool:
            counts = pool[column].value_counts()
            kept[column] = sorted(str(v) for v, n in counts.items() if n >= min_count)
    return FittedPolicy(
        drop=[c for c in params.drop if c in pool],
        pseudonymize=list(params.pseudonymize),
        bins={c: e for c, e in params.bins.items() if c in pool},
        top_code={c: v for c, v in params.top_code.items() if c in pool},
        kept_categories=kept,
        strict_bins=params.strict_bins,
    )


def apply_policy(policy: FittedPolicy, frame: pd.DataFrame, key: bytes | None) -> pd.DataFrame:
    """Mask a raw frame: the result holds no dropped column and no raw value of a masked one.

    Bins are open at the ends: a value below the first edge falls into the first bin, one above the last edge
    into the last (`bins_clipped` counts them); with `strict_bins` such a value is an error. The same function
    masks requests at serving time, so one out-of-bin row does not fail a batch there either.
    """
    out = frame.drop(columns=[c for c in policy.drop if c in frame])
    for column in policy.pseudonymize:
        if column in out:
            if key is None:
                raise ConfigError(f"privacy: column {column!r} needs the pseudonymization key")
            out[column] = pseudonymize(out[column], key)
    for column, edges in policy.bins.items():
        if column in out:
            values = _numeric(out[column], column, "bins")
            below, above = int((values < edges[0]).sum()), int((values > edges[-1]).sum())
            if policy.strict_bins and (below or above):
                raise DataError(
                    f"column {column!r}: privacy rule bins [{edges[0]:g}, {edges[-1]:g}]: {below + above} values fall "
                    f"outside the bins ({below} below {edges[0]:g}, {above} above {edges[-1]:g}; {WITHHELD}); "
                    f"privacy.strict_bins is on (off: they fall into the outermost bin)"
                )
            # Each value becomes its bin's lower edge (the last edge closes the top bin; beyond the edges, the
            # outermost bin).
            idx = np.clip(np.searchsorted(edges, values.to_numpy(), side="right") - 1, 0, len(edges) - 2)
            out[column] = _keep_integers(
                pd.Series(np.asarray(edges)[idx], index=out.index).where(values.notna()), frame[column]
            )
    for column, cap in policy.top_code.items():
        if column in out:
            out[column] = _keep_integers(_numeric(out[column], column, "top_code").clip(upper=cap), frame[column])
    for column, kept in policy.kept_categories.items():
        if column in out:
            values = out[column].astype("object")
            out[column] = values.where(values.isna() | values.astype(str).isin(kept), OTHER)
    return out


def bins_clipped(policy: FittedPolicy, frame: pd.DataFrame) -> dict[str, int]:
    """Per binned column, how many raw values lie beyond the edges (and so fell into the outermost bin)."""
    counts = {}
    for column, edges in policy.bins.items():
        if column in frame:
            values = _numeric(frame[column], column, "bins")
            counts[column] = int(((values < edges[0]) | (values > edges[-1])).sum())
    return counts


def _numeric(values: pd.Series, column: str, rule: str) -> pd.Series:
    """The column as numbers; text that is not a number is an error, not a silent null.

    The error gives counts and types only: the column is masked, so its raw values are not quoted.
    """
    parsed = pd.to_numeric(values, errors="coerce")
    bad = values[values.notna() & parsed.isna()]
    if len(bad):
        types = sorted({type(v).__name__ for v in bad})
        raise DataError(
            f"column {column!r}: privacy rule {rule} needs numbers; expect_column_values_to_be_in_type_list fails "
            f"for {len(bad)} values ({bad.nunique()} distinct, of type {', '.join(types)}; {WITHHELD})"
        )
    return parsed


def _keep_integers(values: pd.Series, original: pd.Series) -> pd.Series:
    """Integer columns stay integer when the generalised values are whole numbers (the model's input schema)."""
    if pd.api.types.is_integer_dtype(original) and values.notna().all() and (values == values.round()).all():
        return values.astype(original.dtype)
    return values
