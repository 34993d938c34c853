"""The training corpus: Python source files found on this machine, chosen by a manifest.

The default source is the standard library of the interpreter that runs the recipe
(on Debian: /usr/lib/python3.X, package libpython3.X-stdlib, PSF License 2.0). Each file
is assigned to train or validation by a hash of its relative path, so the split does not
depend on the order files are listed in and stays put when files are added.
"""
import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass

# Generated tables and documentation dumps teach nothing about code.
EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__", "pydoc_data", "test", "tests", "idle_test"}
MAX_FILE_BYTES = 256 * 1024
VALIDATION_PERCENT = 5


@dataclass
class SourceFile:
    path: str  # relative to the source root
    sha256: str
    bytes: int
    split: str  # "train" or "validation"


def default_source() -> str:
    return sysconfig.get_paths()["stdlib"]


def split_of(relative_path: str) -> str:
    digest = hashlib.sha256(relative_path.encode()).digest()
    return "validation" if int.from_bytes(digest[:4], "big") % 100 < VALIDATION_PERCENT else "train"


def scan(root: str) -> list[SourceFile]:
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in EXCLUDED_DIRS)
        for name in sorted(names):
            if not name.endswith(".py"):
                continue
            full = os.path.join(directory, name)
            if os.path.islink(full):
                continue
            data = open(full, "rb").read()
            if not data.strip() or len(data) > MAX_FILE_BYTES:
                continue
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            rel = os.path.relpath(full, root)
            files.append(SourceFile(rel, hashlib.sha256(data).hexdigest(), len(data), split_of(rel)))
    return files


def write_manifest(path: str, root: str, files: list[SourceFile], license_note: str) -> None:
    manifest = {
        "root": root,
        "license": license_note,
        "files": [f.__dict__ for f in files],
    }
    with open(path, "w") as out:
        json.dump(manifest, out, indent=1)
        out.write("\n")


def read_manifest(path: str) -> tuple[str, list[SourceFile]]:
    manifest = json.load(open(path))
    return manifest["root"], [SourceFile(**f) for f in manifest["files"]]


def load_texts(root: str, files: list[SourceFile], split: str, verify: bool = True) -> list[tuple[str, str]]:
    """(relative path, text) of the files in one split; refuses files that changed since the manifest."""
    texts = []
    for f in files:
        if f.split != split:
            continue
        data = open(os.path.join(root, f.path), "rb").read()
        if verify and hashlib.sha256(data).hexdigest() != f.sha256:
            raise SystemExit(f"{f.path} differs from the manifest (sha256); rebuild the manifest or restore the file")
        texts.append((f.path, data.decode("utf-8")))
    return texts
