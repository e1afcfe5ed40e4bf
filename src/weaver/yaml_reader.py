"""The one YAML reader: yaml.safe_load with bounded alias expansion, for every YAML file a user hands Weaver.

    data = read_yaml(Path("configs/dialogsum-smollm2.yaml"))     # ConfigError with file:line when invalid
    value = parse_yaml("[q_proj, v_proj]")                      # yaml.YAMLError when invalid

Run configs, `--section.key` values, safety policies and the config.yaml of run folders are read here, so an
alias bomb ("billion laughs": a few hundred bytes of anchors that expand to gigabytes) is refused before
anything is built from it, in microseconds and kilobytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from weaver.errors import ConfigError

YAML_ALIAS_NODES = 10_000
"""Most nodes that aliases may add to one YAML document. A few anchors (`&mods [q_proj, v_proj]` ... `*mods`)
add a handful; an alias bomb (nine anchors of nine aliases each: 300 bytes, 9**8 strings once expanded) is
refused before anything is built from it."""


class YAMLAliasError(yaml.YAMLError):
    """A YAML document whose aliases expand beyond YAML_ALIAS_NODES nodes, or refer to themselves."""

    def __init__(self, problem: str, mark=None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_aliases(root) -> None:
    """Count the nodes of the document as if every alias were expanded (iteratively, shared nodes sized once).

    Raises:
        YAMLAliasError: the expansion adds more than YAML_ALIAS_NODES nodes, or an alias contains itself.
    """
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] - len(size) > YAML_ALIAS_NODES:
                raise YAMLAliasError(f"its aliases expand to more than {YAML_ALIAS_NODES} extra values: refused as a "
                                     "possible alias bomb; write the values out or use fewer anchors", node.start_mark)
            continue
        if key in size:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise YAMLAliasError("an alias refers to the anchor that contains it (a recursive alias)",
                                     child.start_mark)
            stack.append((child, False))


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that checks the alias expansion of the composed document before constructing it."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_aliases(node)
        return node


def parse_yaml(text: str) -> Any:
    """yaml.safe_load with bounded alias expansion: every YAML a user hands Weaver is read through here.

    Raises:
        yaml.YAMLError: invalid YAML; YAMLAliasError (a subclass) for an alias bomb or a recursive alias.
    """
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise YAMLAliasError("it is nested too deeply") from None
    finally:
        loader.dispose()


def read_yaml(path: Path, what: str = "") -> Any:
    """Parse a YAML file (UTF-8, BOM allowed) with bounded alias expansion (parse_yaml); an empty file is {}.

    Raises:
        ConfigError: `file:line: invalid YAML <what>(problem)`, also for an alias bomb.
    """
    try:
        return parse_yaml(Path(path).read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML {what}({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: YAML {what}is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the YAML {what}({exc.strerror or exc})") from None
