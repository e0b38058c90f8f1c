"""Parameter files, checked against the notebooks' own ``parameters`` cells.

The cell tagged ``parameters`` in each notebook is the single source of truth
for parameter names and defaults. A parameter file (``params/*.yaml``) only
overrides some of them::

    python -c "from pathlib import Path; from sairlib.params import load_params; \\
        print(load_params('params/ci.yaml', sorted(Path('notebooks').glob('[0-9][0-9]_*.ipynb'))))"

``load_params`` rejects, with the file name and the offending key:

* YAML that does not parse (with the line) or is not a mapping;
* a key no notebook declares (with a did-you-mean suggestion);
* a value whose type differs from the default's: an int is accepted where a
  float is expected, a bool is never taken for a number, a ``None`` (or
  non-literal) default accepts anything, a list default wants a list, and a
  dict default is checked key by key (``model.hiden``); an empty dict default
  accepts any mapping;
* the runner-owned names ``run_dir`` and ``stage_dir``.

A file may start from another one: ``extends: gpu.yaml`` (a path relative to
the extending file's folder) reads that file first and merges this one over it,
mappings key by key (``grpo: {steps: 60}`` changes one GRPO setting and keeps
the rest). Chains of files are followed; a cycle or a missing base is refused
with the file that names it. ``resolve_params`` returns the merged mapping,
which the runner records as the run's ``params.yaml``.

``stage_parameters`` then picks the subset one notebook declares, because
papermill only warns about parameters a notebook does not know.
"""

from __future__ import annotations

import ast
import copy
import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

RESERVED = ("run_dir", "stage_dir")
EXTENDS = "extends"


class ParamsError(ValueError):
    """A parameter file that does not fit the notebooks."""


class _Unknown:
    """Default that could not be evaluated as a literal: any value is accepted."""

    def __repr__(self) -> str:
        return "<non-literal default>"


UNKNOWN = _Unknown()


def notebook_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """Names and defaults of the notebook's ``parameters`` cell.

    Defaults are evaluated with ``ast.literal_eval``; one that is not a
    literal (``Path("x")``, ``2 ** 10``) is returned as ``UNKNOWN``.
    """
    import papermill  # slow import, only needed here

    declared = papermill.inspect_notebook(str(path))
    out: dict[str, Any] = {}
    for name, info in declared.items():
        try:
            out[name] = ast.literal_eval(str(info.get("default")))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            out[name] = UNKNOWN
    return out


class _StrictLoader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a parameter file into a mapping (an empty file is ``{}``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ParamsError(f"{path}: cannot read parameter file: {e.strerror or e}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ParamsError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(
            f"{path}: a parameter file must be a mapping of name: value, got {type(data).__name__}"
        )
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ParamsError(f"{path}: parameter names must be strings, got {bad[0]!r}")
    return data


def deep_merge(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``; mappings merged key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = deep_merge(out.get(k), v)
        return out
    return copy.deepcopy(over)


def resolve_params(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The parameter file at ``path`` with its ``extends`` chain merged in (base first)."""
    path = Path(path)
    here = path.resolve()
    if here in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, here))
        raise ParamsError(f"{path}: {EXTENDS} makes a cycle: {chain}")
    data = read_yaml(path)
    if EXTENDS not in data:
        return data
    base = data.pop(EXTENDS)
    if not isinstance(base, str) or not base:
        raise ParamsError(f"{path}: {EXTENDS} must be the path of another parameter file, got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ParamsError(f"{path}: {EXTENDS}: no parameter file {base_path}")
    return deep_merge(resolve_params(base_path, (*_seen, here)), data)


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _type_ok(value: Any, default: Any) -> bool:
    if default is None or default is UNKNOWN:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, (list, tuple)):
        return isinstance(value, list)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return isinstance(value, type(default))


def _check(value: Any, defaults: list[Any], key: str, where: str) -> None:
    """Check ``value`` against the defaults every declaring notebook gives ``key``."""
    if not any(_type_ok(value, d) for d in defaults):
        wanted = " or ".join(sorted({_type_name(d) for d in defaults}))
        hint = ""
        if isinstance(value, str) and any(isinstance(d, float) for d in defaults):
            try:
                float(value)
                hint = " (YAML reads 1e-3 as a string: write 1.0e-3)"
            except ValueError:
                pass
        raise ParamsError(
            f"{where}: {key} must be {wanted} like its default, "
            f"got {_type_name(value)} {value!r}{hint}"
        )
    dict_defaults = [d for d in defaults if isinstance(d, dict)]
    if not isinstance(value, dict) or not dict_defaults or any(not d for d in dict_defaults):
        return
    if any(d is None or d is UNKNOWN for d in defaults):
        return
    nested: dict[str, list[Any]] = {}
    for d in dict_defaults:
        for k, v in d.items():
            nested.setdefault(str(k), []).append(v)
    for k, v in value.items():
        sub = f"{key}.{k}"
        if str(k) not in nested:
            raise ParamsError(f"{where}: unknown parameter {sub}{_suggest(str(k), nested)}")
        _check(v, nested[str(k)], sub, where)


def declared_parameters(notebooks: Iterable[str | os.PathLike]) -> dict[str, list[Any]]:
    """Every declared name with the defaults of the notebooks that declare it."""
    declared: dict[str, list[Any]] = {}
    for nb in notebooks:
        for name, default in notebook_parameters(nb).items():
            declared.setdefault(name, []).append(default)
    return declared


def load_params(
    params_file: str | os.PathLike, notebooks: Iterable[str | os.PathLike]
) -> dict[str, Any]:
    """Read ``params_file`` and validate it against ``notebooks``; return the mapping."""
    where = str(params_file)
    params = resolve_params(params_file)
    for name in RESERVED:
        if name in params:
            raise ParamsError(
                f"{where}: {name!r} is set by the runner and may not appear in a parameter file"
            )
    declared = declared_parameters(notebooks)
    for name, value in params.items():
        if name not in declared:
            raise ParamsError(
                f"{where}: unknown parameter {name!r}, declared by no notebook"
                f"{_suggest(name, declared)}"
            )
        _check(value, declared[name], name, where)
    return params


def stage_parameters(params: Mapping[str, Any], notebook: str | os.PathLike) -> dict[str, Any]:
    """The entries of ``params`` that ``notebook`` declares, in file order."""
    names = notebook_parameters(notebook)
    return {k: v for k, v in params.items() if k in names}


def check_section(section: Any, keys: Mapping[str, type | tuple], where: str, *,
                  required: bool = False) -> dict[str, Any]:
    """Check one parameter dict used by a library function (``sft``, ``grpo``, ``sft_eval`` ...).

    ``keys`` maps each known key to ``int``, ``float`` or ``bool``, or to a tuple of the values it may
    take (e.g. ``("dynamic", "compiled")``): an unknown key, a missing one (with ``required``), a wrong
    type (a bool is never a number, an int is fine for a float), a negative number or a value not
    among the choices is an error naming ``where.key``. Returns the dict, copied.
    """
    if not isinstance(section, Mapping):
        raise ValueError(f"{where}: must be a mapping, got {type(section).__name__}")
    unknown = set(section) - set(keys)
    if unknown:
        raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown key (known: {', '.join(keys)})")
    if required:
        missing = set(keys) - set(section)
        if missing:
            raise ValueError(f"{where}.{sorted(missing)[0]}: required")
    for k, v in section.items():
        want = keys[k]
        if isinstance(want, tuple):
            if not any(type(v) is type(c) and v == c for c in want):
                raise ValueError(f"{where}.{k}: must be one of {', '.join(map(repr, want))}, got {v!r}")
            continue
        if want is bool:
            ok = isinstance(v, bool)
        else:
            ok = (not isinstance(v, bool) and isinstance(v, (int, float)) and (want is float or isinstance(v, int))
                  and v >= 0)
        if not ok:
            raise ValueError(f"{where}.{k}: must be a{'' if want is bool else ' non-negative'} {want.__name__}, "
                             f"got {v!r}")
    return dict(section)
