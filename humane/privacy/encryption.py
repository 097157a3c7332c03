"""Raw data encrypted at rest with age (X25519): decrypt in memory, encrypt for recipients, rotate keys.

A file `x.csv` is kept as `x.csv.age`, encrypted for a list of recipients (public keys, `age1...`, one a line in
a recipients file that is safe to commit). The load stage decrypts it in memory only, with the identity (the
secret key, `AGE-SECRET-KEY-1...`) from an environment variable, else a Prefect Secret block; the identity is
never logged, printed, stored or quoted in an error. DVC then tracks only ciphertext, so the cache and any
remote never hold the raw file.

Command line (`python -m humane.privacy.encryption ...`):

    keygen --identity FILE            write a new identity to FILE (mode 0600); print its recipient
    encrypt FILE --recipients R       write FILE.age for the recipients in R (--remove-plaintext deletes FILE)
    rotate FILE.age --recipients R    re-encrypt for R with the identity from the environment (key rotation)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from humane.core.errors import ConfigError, DataError, IntegrityFailed, cli
from humane.core.io import atomic_path
from humane.privacy.params import EncryptedSource

if TYPE_CHECKING:  # pyrage is imported where it is used: reading a plaintext source never needs it
    from pyrage import x25519

AGE_SUFFIX = ".age"
# What every age file begins with: the binary header's version line, or the ASCII armor's first line.
AGE_HEADER = b"age-encryption.org/v1\n"
AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
DEFAULT_KEY_ENV = "HUMANE_AGE_IDENTITY"
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
RECIPIENT_PREFIX = "age1"
# pyrage's messages (the Rust age crate's) for a file that ends too early, and for one altered after encryption.
_TRUNCATED = ("age file is truncated", "failed to fill whole buffer")
_NO_MATCH = "No matching keys found"


def is_encrypted(path: Path) -> bool:
    """Whether a file is named as an age file (`x.csv.age`)."""
    return path.name.lower().endswith(AGE_SUFFIX)


def inner_name(path: Path) -> Path:
    """The name of the file inside the encryption: `x.csv` for `x.csv.age`."""
    return path.with_name(path.name[: -len(AGE_SUFFIX)])


def looks_encrypted(path: Path) -> bool:
    """Whether a file's first bytes are an age header (whatever its name)."""
    with path.open("rb") as handle:
        start = handle.read(len(AGE_ARMOR))
    return start.startswith(AGE_HEADER) or start.startswith(AGE_ARMOR)


def source_identity(spec: EncryptedSource, shown: str) -> x25519.Identity:
    """The identity that decrypts the data source `shown` (data.encryption_key_env, else data.encryption_key_block)."""
    return identity_from(
        spec.encryption_key_env,
        spec.encryption_key_block,
        "data.encryption_key_block",
        f"{shown} (data.encryption: age)",
    )


def identity_from(key_env: str, key_block: str | None, setting: str, needed_by: str) -> x25519.Identity:
    """The age identity from the environment variable `key_env`, else the Prefect Secret block `key_block`.

    `setting` names the block's setting and `needed_by` what needs the identity, as the errors name them.

    Raises:
        ConfigError: Neither holds an identity (the message names both places, never a value), or the value
            is not one X25519 identity.
        ServerUnavailable: The Prefect API could not be asked for the block.

    """
    from humane.privacy.policy import _secret_block

    value = os.environ.get(key_env)
    where = f"environment variable {key_env}"
    if not value and key_block:
        value, where = _secret_block(key_block, setting), f"Prefect Secret block {key_block!r}"
    if not value:
        block = f" or the Prefect Secret block {key_block!r}" if key_block else ""
        raise ConfigError(
            f"{needed_by}: no age identity is set: put the identity (the AGE-SECRET-KEY-1... line that `python -m "
            f"humane.privacy.encryption keygen` wrote) in the environment variable {key_env}{block}"
        )
    return parse_identity(value, f"{needed_by}: {where}")


def parse_identity(value: object, where: str) -> x25519.Identity:
    """One X25519 identity from a value holding it (comment lines, as age-keygen writes them, are skipped)."""
    import pyrage
    from pyrage import x25519

    text = value if isinstance(value, str) else ""  # a Secret block may hold a dict: not an identity
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if len(keys) == 1 and keys[0].upper().startswith(IDENTITY_PREFIX):
        try:
            return x25519.Identity.from_str(keys[0])
        except pyrage.IdentityError:
            pass
    raise ConfigError(f"{where}: does not hold one age X25519 identity (one AGE-SECRET-KEY-1... line; value withheld)")


def parse_recipients(lines: Iterable[str], where: str) -> list[x25519.Recipient]:
    """Recipients (`age1...`), one a line; blank lines and `#` comments skipped. A bad line is named, never quoted."""
    import pyrage
    from pyrage import x25519

    recipients = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("AGE-SECRET-KEY-"):
            raise ConfigError(
                f"{where}: line {number} holds a secret identity, not a recipient; remove it from this file now "
                f"(a recipients file holds public keys, age1..., and is committed)"
            )
        try:
            recipients.append(x25519.Recipient.from_str(line))
        except pyrage.RecipientError:
            raise ConfigError(f"{where}: line {number} is not an age X25519 recipient (age1...)") from None
    if not recipients:
        raise ConfigError(f"{where}: names no recipient; add at least one age1... public key")
    return recipients


def read_recipients(path: Path) -> list[x25519.Recipient]:
    """The recipients listed in a recipients file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as err:
        raise ConfigError(f"{path}: cannot read the recipients file ({type(err).__name__})") from None
    return parse_recipients(text.splitlines(), str(path))


def decrypt(path: Path, identity: x25519.Identity, shown: str | None = None) -> bytes:
    """The plaintext of an age file, in memory only (never written anywhere).

    Raises:
        DataError: The file is not an age file, or the identity is not one of its recipients.
        IntegrityFailed: The file is truncated, or was altered after encryption (age's MAC does not verify).

    """
    import pyrage

    name = shown or str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{name}: cannot be read ({type(err).__name__})") from None
    if not (data.startswith(AGE_HEADER) or data.startswith(AGE_ARMOR)):
        raise DataError(
            f"{name}: is not an age-encrypted file (it does not begin with the age header); encrypt the plaintext "
            f"with `python -m humane.privacy.encryption encrypt`, or name the plaintext file and set "
            f"data.encryption: none"
        )
    try:
        return pyrage.decrypt(data, [identity])
    except pyrage.DecryptError as err:
        raise _decrypt_error(name, str(err)) from None


def _decrypt_error(name: str, reason: str) -> DataError | IntegrityFailed:
    """The error for a failed decryption, from age's reason (which never holds key material)."""
    if reason == _NO_MATCH:
        return DataError(
            f"{name}: the age identity set is not one of this file's recipients (wrong key), so it cannot be "
            f"decrypted; use an identity it was encrypted for, or have it re-encrypted (`rotate`) for yours"
        )
    if reason in _TRUNCATED:
        return IntegrityFailed(
            f"{name}: the age file is truncated (it ends before its last chunk); restore it, e.g. `dvc checkout`"
        )
    return IntegrityFailed(
        f"{name}: fails age's authentication ({reason}): the file was altered, or cut short, after it was encrypted; "
        f"restore it, e.g. `dvc checkout`"
    )


def encrypt(plaintext: bytes, recipients: Sequence[x25519.Recipient]) -> bytes:
    """The age ciphertext of `plaintext` for every recipient (binary format)."""
    import pyrage

    if not recipients:
        raise ConfigError("encryption needs at least one recipient (age1...)")
    return pyrage.encrypt(plaintext, list(recipients))


def write_ciphertext(path: Path, ciphertext: bytes) -> None:
    """Replace `path` with `ciphertext` atomically (a temporary file beside it holds ciphertext only)."""
    with atomic_path(path) as tmp, tmp.open("wb") as handle:  # closed before atomic_path moves it into place
        handle.write(ciphertext)
        handle.flush()
        os.fsync(handle.fileno())


def encrypt_file(path: Path, recipients: Sequence[x25519.Recipient], force: bool = False) -> Path:
    """Write `path`.age, encrypted for `recipients`; the plaintext file is left as it is. Returns the new path."""
    if is_encrypted(path):
        raise DataError(f"{path}: is already an age file (its name ends in .age); use `rotate` to re-encrypt it")
    if not path.is_file():
        raise DataError(f"{path}: not found (or not a file)")
    out = path.with_name(path.name + AGE_SUFFIX)
    if out.exists() and not force:
        raise DataError(f"{out}: exists; remove it, or pass --force to replace it")
    write_ciphertext(out, encrypt(path.read_bytes(), recipients))
    return out


def rotate_file(path: Path, identity: x25519.Identity, recipients: Sequence[x25519.Recipient]) -> None:
    """Re-encrypt an age file for new recipients (decrypted in memory with `identity`, replaced atomically)."""
    write_ciphertext(path, encrypt(decrypt(path, identity), recipients))


def keygen(identity_file: Path) -> str:
    """Write a new identity to `identity_file` (created with mode 0600, never overwritten); return its recipient."""
    from pyrage import x25519

    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    identity_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(identity_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{identity_file}: exists; an identity is never overwritten, choose another file") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(f"# created: {created}\n# public key: {recipient}\n{identity}\n")
    return recipient


def _recipients(args: argparse.Namespace) -> list[x25519.Recipient]:
    """The recipients of --recipients FILE and of each --recipient."""
    listed = read_recipients(args.recipients) if args.recipients else []
    given = parse_recipients(args.recipient, "--recipient") if args.recipient else []
    if not listed and not given:
        raise ConfigError("name the recipients: --recipients FILE (one age1... a line) or --recipient age1...")
    return listed + given


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m humane.privacy.encryption", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    made = sub.add_parser("keygen", help="write a new identity (0600) and print its recipient")
    made.add_argument("--identity", type=Path, required=True, help="the file to write the identity to")
    for name, what in (("encrypt", "the plaintext file"), ("rotate", "the .age file")):
        command = sub.add_parser(name, help=f"{name} {what}")
        command.add_argument("file", type=Path, help=what)
        command.add_argument("--recipients", type=Path, help="a file of recipients, one age1... a line")
        command.add_argument("--recipient", action="append", default=[], help="a recipient (age1...); repeatable")
    encrypting = sub.choices["encrypt"]
    encrypting.add_argument("--remove-plaintext", action="store_true", help="delete the plaintext once encrypted")
    encrypting.add_argument("--force", action="store_true", help="replace an existing .age file")
    rotating = sub.choices["rotate"]
    rotating.add_argument("--key-env", default=DEFAULT_KEY_ENV, help="the variable holding the current identity")
    rotating.add_argument("--key-block", default=None, help="else this Prefect Secret block")
    return parser


def main(argv: list[str] | None = None) -> str:
    """Run one command; return what it tells the user (the identity itself is never part of it)."""
    args = _parser().parse_args(argv)
    if args.command == "keygen":
        recipient = keygen(args.identity)
        print(f"identity written to {args.identity} (mode 0600; keep it secret, never commit it)", file=sys.stderr)
        return recipient
    if args.command == "encrypt":
        return _encrypt(args)
    identity = identity_from(args.key_env, args.key_block, "--key-block", f"rotate {args.file}")
    rotate_file(args.file, identity, _recipients(args))
    return (
        f"re-encrypted {args.file} for the new recipients; run `dvc add {args.file}` and commit its .dvc file. "
        f"Older copies in the DVC cache, the remote and git history stay readable with the old identity: "
        f"`dvc gc` removes unreferenced ones from the cache"
    )


def _encrypt(args: argparse.Namespace) -> str:
    out = encrypt_file(args.file, _recipients(args), force=args.force)
    lines = [f"wrote {out}"]
    if args.remove_plaintext:
        args.file.unlink()
        lines.append(f"removed {args.file} (unlinked; the disk blocks are not overwritten)")
    else:
        lines.append(
            f"delete the plaintext {args.file} once you have checked the .age file (or pass --remove-plaintext)"
        )
    if args.file.with_name(args.file.name + ".dvc").exists():
        lines.append(
            f"{args.file} was tracked by DVC: its plaintext stays in the DVC cache and remote until you "
            f"`dvc remove {args.file}.dvc` and `dvc gc`"
        )
    lines.append(
        f"then `dvc add {out}`, commit {out.name}.dvc, and name {out} in data.source with data.encryption: age"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    cli(lambda: print(main()))
