"""The documentation is tested: README.md and docs/*.md, whatever they hold when the suite runs.

- ```python blocks that import gs3 run, each in a fresh temporary folder (HOME there too, so caches land in
  it). A block that calls `pretrain(`, `finetune(` or `evaluate_checkpoint(` trains: it runs with `-m slow`,
  and the fast suite executes only its import statements. The files the README's demo commands produce
  (`runs/demo/checkpoints/last.ckpt`, `spunet_gs3.pth`) are provided when a block names them. Blocks that
  do not import gs3 (other frameworks' config snippets) are only compiled.
- Every `gs3 …` command line in a code block (fenced or indented; also `python -m gs3.cli …` and after
  `torchrun … -m gs3.cli`) is parsed by the real CLI parser, without running it; `gs3 pretrain` /
  `gs3 finetune` load and validate their `--config` with the `key=value` overrides (and build the model
  when an override touches `model.*`), `gs3 evaluate` checks its overrides against the fine-tuning schema,
  `gs3 data synthetic` is parsed by its own parser. Optional parts in `[…]` are checked as if given; lines
  that show gs3's output (`gs3 pretrain: …`) are not commands.
- Inline code that names a config key (`data.…`, `model.…`, `loss.…`, `optim.…`, `trainer.…`,
  `evaluation.…`) must name one of the pre-training or fine-tuning schema (keys under a free-form dict such
  as `model.encoder` or `data.extra` are free).
- Relative links must reach an existing file, and their `#anchor` a heading there; a link to a page of
  docs/ that is not written yet is reported as skipped.
- docs/architecture.md's layer table: every import in src/gs3 goes to a lower layer.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import itertools
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SRC = REPO / "src" / "gs3"
TRAINING_CALLS = {"pretrain", "finetune", "evaluate_checkpoint"}
DEMO_ARTIFACTS = ("runs/demo/checkpoints/last.ckpt", "spunet_gs3.pth")  # what the README's demo commands make
CONFIG_SECTIONS = ("data", "model", "loss", "optim", "trainer", "evaluation")
# Members of other frameworks' configs (mmdetection3d, Pointcept) that share a section name with gs3's.
FOREIGN_KEYS = {"backbone", "train", "val", "test", "samples_per_gpu", "workers_per_gpu", "decode_head"}
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")"}
LAUNCHERS = {"xargs", "time", "nohup", "env", "srun", "exec", "timeout", "parallel"}


# --- reading markdown -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the block's first content line
    language: str  # "" for indented blocks
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def split_markdown(path: Path) -> tuple[list[Block], list[tuple[int, str]]]:
    """Code blocks (fenced and indented) and the prose lines (number, text) outside them."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []
    fence, fence_lang, fence_start, body = None, "", 0, []
    indented: list[str] = []
    indented_start = 0
    previous_blank = True

    def close_indented() -> None:
        nonlocal indented
        while indented and not indented[-1].strip():
            indented.pop()
        if indented:
            blocks.append(Block(path, indented_start, "", "\n".join(line[4:] for line in indented)))
        indented = []

    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence) and stripped.strip("`~") == "":
                blocks.append(Block(path, fence_start, fence_lang, "\n".join(body)))
                fence = None
            else:
                body.append(line)
            continue
        match = re.match(r"^(```+|~~~+)\s*([\w+-]*)", stripped)
        if match and not line.startswith("    "):
            close_indented()
            fence, fence_lang, fence_start, body = match.group(1), match.group(2).lower(), number + 1, []
            continue
        if line.startswith("    ") and (indented or previous_blank):
            if not indented:
                indented_start = number
            indented.append(line)
        elif indented and not stripped:
            indented.append(line)
        else:
            close_indented()
            prose.append((number, line))
        previous_blank = not stripped
    close_indented()
    return blocks, prose


def inline_spans(line: str) -> list[str]:
    return re.findall(r"(?<!`)`([^`\n]+)`(?!`)", line)


# --- gs3 command lines ----------------------------------------------------------------------------------
def logical_lines(text: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", text)
    return [line.strip().removeprefix("$ ") for line in joined.splitlines() if line.strip()]


def is_gs3(word: str) -> bool:
    return word == "gs3" or word.endswith("/gs3")  # gs3, .venv/bin/gs3 (not the folder src/gs3/)


def gs3_arguments(segment: list[str]) -> list[str] | None:
    """The arguments of a gs3 invocation in one shell command (tokens), or None if it runs something else."""
    for index, token in enumerate(segment[:-1]):
        if token == "-m" and segment[index + 1] == "gs3.cli":
            return segment[index + 2 :]
    words = list(itertools.dropwhile(lambda word: re.match(r"^[A-Za-z_]\w*=", word), segment))
    if not words:
        return None
    if is_gs3(words[0]):
        return words[1:]
    if words[0] in LAUNCHERS:  # e.g. xargs -P 8 -I{} gs3 data export-sens …
        for index, word in enumerate(words):
            if is_gs3(word):
                return words[index + 1 :]
    return None


def commands_in(text: str) -> list[list[str]]:
    commands = []
    for line in logical_lines(text):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = list(lexer)
        except ValueError:  # an unbalanced quote: prose in an indented block, not a command
            continue
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token not in SHELL_OPERATORS:
                segment.append(token)
                continue
            arguments = gs3_arguments(segment)
            segment = []
            if arguments is None or (arguments and arguments[0].endswith(":")):
                continue  # not gs3, or a line of gs3's output ("gs3 pretrain: 300 steps ...")
            commands.append([part for word in arguments if (part := word.strip("[]"))])
    return commands


def check_command(argv: list[str]) -> None:
    """Parse like `gs3 ARGV` and load what the command would load; raise AssertionError saying what fails."""
    from gs3.cli import build_parser, parse

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser, _ = build_parser(argv)
            args = parse(parser, argv)
    except SystemExit as exit:
        if exit.code == 0 and any(flag in argv for flag in ("-h", "--help", "--version")):
            return
        raise AssertionError(f"the CLI rejects it: {stderr.getvalue().strip().splitlines()[-1:]}") from None
    overrides = list(getattr(args, "overrides", []) or [])
    if args.command == "pretrain":
        from gs3.config import load_config

        config = load_config(args.config, overrides)
        if any(item.startswith("model.") for item in overrides):
            build_pretraining_model(config)
    elif args.command == "finetune":
        from gs3.downstream.config import load_finetune_config
        from gs3.downstream.data.classes import class_set
        from gs3.train.finetune_module import build_segmentor

        config = load_finetune_config(args.config, overrides)
        if any(item.startswith("model.") for item in overrides):
            build_segmentor(config, class_set(config.data.classes).num_classes)
    elif args.command == "evaluate":
        from gs3.config import structured_from_dict
        from gs3.downstream.config import FinetuneConfig

        structured_from_dict(FinetuneConfig, {}, "the evaluated checkpoint's config", overrides)
    elif args.command == "data" and args.data_command == "synthetic":
        import argparse
        import importlib

        from gs3.data.commands import SYNTHETIC_MODULE

        synthetic = argparse.ArgumentParser(prog="gs3 data synthetic")
        importlib.import_module(SYNTHETIC_MODULE).add_arguments(synthetic)
        try:
            with contextlib.redirect_stderr(stderr):
                synthetic.parse_args(args.synthetic_args)
        except SystemExit as exit:
            if exit.code != 0:
                raise AssertionError(f"gs3 data synthetic rejects it: {stderr.getvalue().strip()}") from None


def build_pretraining_model(config) -> None:
    """Build the model (catches misspelt keys of free-form settings: encoder, head_kwargs, epipolar)."""
    import gs3.model
    from gs3.encoders.spconv_compat import MissingDependencyError

    config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, lpips_weight=0.0))
    build = getattr(gs3.model, "build_model", gs3.model.GS3)
    try:
        build(config)
    except MissingDependencyError as error:
        pytest.skip(f"cannot build the model here: {error}")


# --- config keys named in prose -------------------------------------------------------------------------
SECTIONS = "|".join(CONFIG_SECTIONS)
KEY_SPAN = re.compile(rf"^((?:{SECTIONS})(?:\.[A-Za-z_]\w*)+)\s*(?:[=:].*)?$")


def key_in_schema(schema: type, key: str) -> bool:
    node: object = OmegaConf.structured(schema)
    for part in key.split("."):
        if isinstance(node, DictConfig):
            if OmegaConf.get_type(node) is dict:
                return True  # a free-form setting: anything below it is the user's
            if part not in node:
                return False
            node = node._get_node(part)  # type: ignore[attr-defined]
        else:
            return False  # a leaf with more parts after it
    return True


def config_key_exists(key: str) -> bool:
    from gs3.config import PretrainConfig
    from gs3.downstream.config import FinetuneConfig

    return key_in_schema(PretrainConfig, key) or key_in_schema(FinetuneConfig, key)


# --- links ------------------------------------------------------------------------------------------------
def github_anchor(heading: str) -> str:
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    _, prose = split_markdown(path)
    for _, line in prose:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            anchor, suffix = github_anchor(match.group(1)), 1
            while anchor in found:
                anchor, suffix = f"{github_anchor(match.group(1))}-{suffix}", suffix + 1
            found.add(anchor)
    return found


# --- collection -------------------------------------------------------------------------------------------
def collect() -> tuple[list, list, list, list]:
    python_blocks, commands, keys, links = [], [], [], []
    for doc in DOCS:
        blocks, prose = split_markdown(doc)
        for block in blocks:
            if block.language in ("python", "py"):
                python_blocks.append(pytest.param(block, id=block.where))
            elif block.language in ("", "bash", "sh", "shell", "console", "text"):
                for argv in commands_in(block.text):
                    commands.append(pytest.param(argv, id=f"{block.where} gs3 {' '.join(argv)}"[:150]))
        for number, line in prose:
            where = f"{doc.relative_to(REPO)}:{number}"
            for span in inline_spans(line):
                match = KEY_SPAN.match(span.strip())
                if match and match.group(1).split(".")[1] not in FOREIGN_KEYS:
                    keys.append(pytest.param(match.group(1), id=f"{where} {match.group(1)}"))
            for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line)):
                if not re.match(r"^[a-z]+:", target):
                    links.append(pytest.param(doc, target, id=f"{where} {target}"))
    return python_blocks, commands, keys, links


PYTHON_BLOCKS, COMMANDS, KEYS, LINKS = collect()


def test_the_docs_hold_examples_to_test() -> None:
    """A guard against the extraction finding nothing (the tests below would then pass vacuously)."""
    assert (REPO / "docs").is_dir() and len(DOCS) >= 5
    assert len(COMMANDS) >= 20 and len(PYTHON_BLOCKS) >= 3 and len(KEYS) >= 20 and len(LINKS) >= 10


@pytest.mark.parametrize("argv", COMMANDS)
def test_command_parses_and_its_config_loads(argv: list[str]) -> None:
    check_command(argv)


@pytest.mark.parametrize("key", KEYS)
def test_config_key_named_in_the_text_exists(key: str) -> None:
    assert config_key_exists(key), f"{key}: no such key in the pre-training or fine-tuning config"


@pytest.mark.parametrize(("doc", "target"), LINKS)
def test_relative_link_resolves(doc: Path, target: str) -> None:
    path_part, _, anchor = target.partition("#")
    path = (doc.parent / path_part).resolve() if path_part else doc
    if not path.exists():
        if path.suffix == ".md" and path.parent == REPO / "docs":
            pytest.skip(f"{path.name} is not written yet")
        raise AssertionError(f"{target}: {path} does not exist")
    if anchor:
        assert anchor in anchors(path), f"{target}: no heading with anchor #{anchor} in {path.name}"


# --- running the Python examples ----------------------------------------------------------------------------
def imports_gs3(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        if any(name == "gs3" or name.startswith("gs3.") for name in names):
            return True
    return False


def trains(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in TRAINING_CALLS:
                return True
    return False


@pytest.fixture(scope="module")
def demo_artifacts(tmp_path_factory) -> dict[str, Path]:
    """What `gs3 pretrain --config demo` and `gs3 export … --out spunet_gs3.pth` leave, from 2 tiny steps."""
    from gs3.config import load_config
    from gs3.train.export import export_checkpoint
    from gs3.train.runner import pretrain

    folder = tmp_path_factory.mktemp("demo_artifacts")
    config = load_config(
        "demo",
        [
            f"data.cache_dir={folder / 'cache'}",
            "optim.max_steps=2",
            "data.num_workers=0",
            "trainer.progress_bar=false",
        ],
    )
    summary = pretrain(config, out_dir=folder / "run")
    export_checkpoint(summary.checkpoint, "pointcept", folder / "spunet_gs3.pth")
    return {
        "runs/demo/checkpoints/last.ckpt": summary.checkpoint,
        "spunet_gs3.pth": folder / "spunet_gs3.pth",
    }


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A fresh working folder and HOME; the registries restored afterwards (examples may register)."""
    from gs3.downstream.heads import HEADS as CLASSIFIER_HEADS
    from gs3.encoders import ENCODERS
    from gs3.gaussians.heads import HEADS as GAUSSIAN_HEADS

    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for registry in (ENCODERS, GAUSSIAN_HEADS, CLASSIFIER_HEADS):
        monkeypatch.setattr(registry, "_builders", dict(registry._builders))
    return work


def run_block(block: Block, work: Path, request, only_imports: bool) -> None:
    tree = ast.parse(block.text, filename=block.where)
    if only_imports:
        tree.body = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    else:
        artifacts = [name for name in DEMO_ARTIFACTS if name in block.text]
        if artifacts:
            made = request.getfixturevalue("demo_artifacts")
            for name in artifacts:
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(made[name], work / name)
    exec(compile(tree, block.where, "exec"), {"__name__": "__docs__"})


def python_params(slow: bool) -> list:
    params = []
    for param in PYTHON_BLOCKS:
        (block,) = param.values
        tree = ast.parse(block.text)
        if slow and imports_gs3(tree) and trains(tree):
            params.append(pytest.param(block, id=block.where, marks=pytest.mark.slow))
        elif not slow:
            params.append(param)
    return params


@pytest.mark.parametrize("block", python_params(slow=False))
def test_python_example_runs(block: Block, isolated: Path, request) -> None:
    tree = ast.parse(block.text, filename=block.where)  # a SyntaxError fails here
    if not imports_gs3(tree):
        compile(tree, block.where, "exec")
        return
    run_block(block, isolated, request, only_imports=trains(tree))


@pytest.mark.parametrize("block", python_params(slow=True))
def test_training_example_runs(block: Block, isolated: Path, request) -> None:
    run_block(block, isolated, request, only_imports=False)


# --- dependencies point one way ---------------------------------------------------------------------------
def layer_table() -> dict[str, int]:
    _, prose = split_markdown(REPO / "docs" / "architecture.md")
    layers, inside = {}, False
    for _, line in prose:
        if line.startswith("## "):
            inside = line.startswith("## Dependencies")
        match = re.match(r"^\|\s*(\d+)\s*\|(.*)\|\s*$", line) if inside else None
        if match:
            for unit in re.findall(r"`([\w.]+)`", match.group(2)):
                layers[unit] = int(match.group(1))
    return layers


def unit_of(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def imports_by_unit() -> dict[str, set[tuple[str, str]]]:
    """unit → {(imported unit, where)} over every module of src/gs3, imports inside functions included."""
    found: dict[str, set[tuple[str, str]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC.parent).with_suffix("")
        unit = "__init__" if relative.parts == ("gs3", "__init__") else relative.parts[1]
        found.setdefault(unit, set())
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                package = list(relative.parts[:-1])  # the package a relative import starts from
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                targets = [module]
                if module == "gs3":  # from gs3 import data: the subpackage, not the package
                    targets = [f"gs3.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if target == "gs3" or target.startswith("gs3."):
                    target_unit = unit_of(target)
                    if not (SRC / f"{target_unit}.py").exists() and not (SRC / target_unit).is_dir():
                        target_unit = "__init__"  # a name defined in gs3/__init__.py (__version__)
                    found[unit].add((target_unit, f"{path.relative_to(REPO)}:{node.lineno}"))
    return found


def test_dependencies_point_one_way() -> None:
    layers = layer_table()
    units = imports_by_unit()
    unlisted = sorted(set(units) - set(layers))
    assert not unlisted, f"docs/architecture.md's layer table lacks {unlisted}"
    upward = [
        f"{where}: {unit} (layer {layers[unit]}) imports {target} (layer {layers[target]})"
        for unit, targets in units.items()
        for target, where in sorted(targets)
        if target != unit and layers[target] >= layers[unit]
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


# --- the checks themselves can fail -----------------------------------------------------------------------
def test_the_checks_catch_broken_docs(tmp_path) -> None:
    doc = tmp_path / "broken.md"
    doc.write_text(
        "Run `gs3 pretrain`:\n\n"
        "    gs3 pretrain --config gs3_rgbd_spunt\n"
        "    gs3 pretrain --config demo optim.learning_rate=3e-4\n"
        "    gs3 pretrain --config demo model.head_kwargs.max_scal=3\n"
        "    gs3 finetune --config demo_semseg_spunet_synthetic data.sourse=frames\n"
        "    gs3 data export-sens FILE.sens --out DIR --every N\n"
        "    gs3 pretrain --config demo data.mask_ratio=0.3   # fine\n"
        "    gs3 pretrain: 300 steps in 1m50s (output, not a command)\n\n"
        "```python\nprint('not gs3')\n```\n\nSet `loss.lpips_linear_weights` or `data.extra.anything`.\n"
    )
    blocks, prose = split_markdown(doc)
    commands = [argv for block in blocks if not block.language for argv in commands_in(block.text)]
    assert len(commands) == 6 and [block.language for block in blocks] == ["", "python"]
    for argv in commands[:5]:
        with pytest.raises(Exception):  # noqa: B017 (ConfigError, AssertionError, ...: any failure)
            check_command(argv)
    check_command(commands[5])
    spans = [span for _, line in prose for span in inline_spans(line)]
    assert not config_key_exists("loss.lpips_linear_weights") and config_key_exists("data.extra.anything")
    assert spans == ["gs3 pretrain", "loss.lpips_linear_weights", "data.extra.anything"]
    assert github_anchor("`.sens` directly, or exported") == "sens-directly-or-exported"
