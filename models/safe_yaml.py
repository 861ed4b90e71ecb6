"""Reading user YAML (model, hyp, data, albumentations files) with a bound on what it may expand to.

YAML aliases let a few hundred bytes stand for billions of values ("billion laughs"): the safe loaders build
every copy. `load_yaml` composes the node graph first (aliases there are shared nodes, so it stays the size of
the text), counts the nodes it would expand to, and refuses past `MAX_NODES` before anything is built. The C
loader (libyaml) is used where PyYAML has it.

`short(value)` is the repr of a value cut to about 100 characters, for messages that show what a file said.
"""

from __future__ import annotations

import reprlib
from pathlib import Path

import yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_NODES = 1_000_000  # the largest real files (class lists of 20k names) are far below; a bomb is far above


class YAMLTooLarge(ValueError):
    """A YAML whose aliases expand past MAX_NODES values, or that refers to itself."""


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 60, 60, 8, 6, 3


def short(value, limit: int = 100) -> str:
    """repr(value) cut to about `limit` characters (nested lists and long strings elided)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_text(message, limit: int = 300) -> str:
    """A message (an exception's, which may quote a whole value) on one line, cut to `limit` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def expanded_size(node, limit: int = MAX_NODES) -> int:
    """How many nodes `node` stands for once every alias is copied out; stops counting past `limit`."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(n) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise YAMLTooLarge("it refers to itself (an alias inside its own anchor)")
        open_.add(key)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            for child in n.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                total += size(k) + size(v)
                if total > limit:
                    break
        open_.discard(key)
        sizes[key] = total = min(total, limit + 1)
        return total

    import sys

    depth = sys.getrecursionlimit()
    sys.setrecursionlimit(max(depth, 20_000))
    try:
        return size(node) if node is not None else 0
    except RecursionError:
        raise YAMLTooLarge("it nests deeper than 10000 levels") from None
    finally:
        sys.setrecursionlimit(depth)


def load_yaml(text: str, source, max_nodes: int = MAX_NODES):
    """The Python value of YAML `text`; YAMLTooLarge naming `source` when it would expand past `max_nodes` values.

    yaml.YAMLError (syntax) passes through for the caller to word.
    """
    loader = LOADER(text)
    try:
        node = loader.get_single_node()
        try:
            n = expanded_size(node, max_nodes)
        except YAMLTooLarge as e:
            raise YAMLTooLarge(f"{source}: refused: {e}") from None
        if n > max_nodes:
            raise YAMLTooLarge(f"{source}: refused: it expands to more than {max_nodes:,} values once its aliases are "
                               "copied out (a YAML alias bomb?); a real model, hyp or dataset YAML is far smaller")
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def load_yaml_file(path, max_nodes: int = MAX_NODES):
    """load_yaml of a file's text, the file named in errors."""
    return load_yaml(Path(path).read_text(), path, max_nodes)


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML parse error in one line: where (line, column) and what."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (getattr(e, "problem", None) or str(e).splitlines()[0])


def read_yaml(path, error: type[Exception], name: str | None = None, invalid: type[Exception] | None = None):
    """The value of the YAML file `path`, or `error` with one line saying so when it is too large (an alias bomb), and
    `invalid` (default: `error`) when it is not valid YAML text; messages start with `name` (default: the path)."""
    name = name or str(path)
    try:
        return load_yaml(Path(path).read_text(), name)
    except YAMLTooLarge as e:
        raise error(str(e)) from None
    except yaml.YAMLError as e:
        raise (invalid or error)(f"{name}: not valid YAML ({yaml_problem(e)[:160]})") from None
    except UnicodeDecodeError as e:
        raise (invalid or error)(f"{name}: not valid YAML ({str(e).splitlines()[0][:160]})") from None
