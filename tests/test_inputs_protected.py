"""No output replaces a file the run reads, however either is spelled: a property over the ways a path
can be written (relative, absolute, ./, .., doubled slashes, a linked folder, a symbolic or a hard link),
the options that read a file and the options that write one."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fxrewrite import cli

TARGET = Path(__file__).parents[1] / "targets" / "npu-generic.toml"
SOURCE = "import torch\nfrom torch import nn\n\ndef seq():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())\n" \
         "\ndef data():\n    return torch.randn(12, 3, 16, 16)\n"
SMALL = ("--input-shape", "1,3,16,16")

#: how each option that reads a file names it: (the file in the folder, the arguments given a spelling of it)
READERS = {
    "MODEL file.py:callable": ("tiny.py", lambda s: ["tiny_model_placeholder", f"{s}:seq"]),
    "MODEL .pt2": ("model.pt2", lambda s: ["tiny_model_placeholder", s]),
    "--weights": ("w.pt", lambda s: ["--weights", s]),
    "--calib .npy": ("calib.npy", lambda s: ["--calib", s]),
    "--calib file.py:callable": ("calibsrc.py", lambda s: ["--calib", f"{s}:data"]),
    "--target": ("target.toml", lambda s: ["--target", s]),
}
#: the options that write, with the suffix a file they name must have ("" for any)
WRITERS = {"lower -o": ".pt2", "lower --report": "", "lower --dump-ir": "", "viz -o": ".svg"}
SPELLINGS = ("plain", "dot-slash", "absolute", "dot-dot", "doubled-slashes", "linked-folder", "symbolic-link",
             "hard-link")
PROTECTED = ("would overwrite the input", "holds the input", "lies in the input folder")


def _folder(root: Path) -> None:
    """The files the readers name, a subfolder (for ..) and a link to the folder itself."""
    (root / "tiny.py").write_text(SOURCE)
    (root / "calibsrc.py").write_text(SOURCE)
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).state_dict(), root / "w.pt")
    np.save(root / "calib.npy", np.zeros((12, 3, 16, 16), np.float32))
    (root / "target.toml").write_bytes(TARGET.read_bytes())
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 16, 16),)), root / "model.pt2")
    (root / "sub").mkdir()
    os.symlink(".", root / "here")


def _spelled(root: Path, name: str, spelling: str, suffix: str = "", role: str = "out") -> str:
    """`name` in `root` (the working folder) written one way; links (named for `role`) are made with
    `suffix` when given."""
    stem, ext = os.path.splitext(name)
    ext = suffix or ext
    if spelling == "symbolic-link":
        link = root / f"{stem}-{role}-symlink{ext}"
        os.symlink(name, link)
        return link.name
    if spelling == "hard-link":
        link = root / f"{stem}-{role}-hardlink{ext}"
        os.link(root / name, link)
        return link.name
    return {"plain": name, "dot-slash": f"./{name}", "absolute": str(root / name), "dot-dot": f"sub/../{name}",
            "doubled-slashes": f".//{name}", "linked-folder": f"here/{name}"}[spelling]


def _argv(root: Path, reader: str, read_as: str, writer: str, written_as: str) -> list[str]:
    name, arguments = READERS[reader]
    given = arguments(_spelled(root, name, read_as, role="in"))
    model = given[1] if given[0] == "tiny_model_placeholder" else "tiny.py:seq"
    extra = [] if given[0] == "tiny_model_placeholder" else given
    command, flag = writer.split(" ")
    suffix = WRITERS[writer]
    if flag == "--dump-ir":
        output = {"plain": ".", "dot-slash": "./", "absolute": str(root), "dot-dot": "sub/..",
                  "doubled-slashes": ".//", "linked-folder": "here"}.get(written_as, ".")
    elif suffix and not name.endswith(suffix) or written_as == "symbolic-link":
        output = _spelled(root, name, "symbolic-link", suffix)  # a link of the writer's suffix to the file read
    else:
        output = _spelled(root, name, written_as)
    if command == "viz":
        return ["viz", model, *SMALL, *extra, "-o", output]
    target = [] if reader == "--target" else ["--target", "npu-generic"]
    others = ["-o", "out.pt2"] if flag != "-o" else []
    return ["lower", model, *SMALL, *target, *extra, *others, flag, output]


@settings(max_examples=60, deadline=None)
@given(reader=st.sampled_from(sorted(READERS)), read_as=st.sampled_from(SPELLINGS),
       writer=st.sampled_from(sorted(WRITERS)), written_as=st.sampled_from(SPELLINGS))
def test_no_output_replaces_a_file_the_run_reads(reader, read_as, writer, written_as):
    if writer == "viz -o" and reader.startswith(("--calib", "--target")):
        reader = "MODEL file.py:callable"  # viz reads no calibration data; its --target is an optional colouring
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        root = Path(folder).resolve()
        _folder(root)
        argv = _argv(root, reader, read_as, writer, written_as)
        before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(argv)
        assert code == 2, (argv, err.getvalue())
        assert any(message in err.getvalue() for message in PROTECTED), (argv, err.getvalue())
        after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
        assert after == before, argv
