"""`medzoo <command> key=value ...`: one command line for every job, each a Hydra app with its own config.

Hydra, OmegaConf and each command's module are imported only when a command runs, so that `medzoo --help`
answers without them (bench/cli_startup.py measures it).
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medzoo.errors import ConfigError, MedzooError


@dataclass(frozen=True)
class Command:
    config: str
    run: str  # "module:function", imported only when the command runs (keeps `medzoo --help` fast)
    help: str

    def function(self) -> Callable:
        module, name = self.run.split(":")
        return getattr(__import__(module, fromlist=[name]), name)


COMMANDS: dict[str, Command] = {
    "train": Command("train", "medzoo.commands.train:train", "train a recipe: medzoo train recipe=NAME [key=value ...]"),
    "eval": Command("eval", "medzoo.commands.evaluate:evaluate_checkpoint",
                    "evaluate a checkpoint: medzoo eval ckpt=PATH data.root=DIR split=test|val"),
    "predict": Command("predict", "medzoo.commands.predict:predict",
                       "class probabilities per file: medzoo predict ckpt=PATH inputs=FILE_OR_DIR"),
    "data": Command("data", "medzoo.commands.data:data",
                    "public datasets: medzoo data (what can be fetched) | medzoo data fetch name=brain_tumor"),
    "prepare": Command("prepare", "medzoo.commands.prepare:prepare",
                       "decode once into a verified cache: medzoo prepare inputs=DIR out=DIR"),
    "audit": Command("audit", "medzoo.commands.audit:audit", "audit a dataset: medzoo audit data=brain_tumor data.root=DIR"),
    "export": Command("export", "medzoo.commands.export:export",
                      "deployable model: medzoo export ckpt=PATH format=onnx|torchscript|monai-bundle"),
    "bench": Command("bench", "medzoo.commands.bench:bench",
                     "how fast a recipe trains here: medzoo bench recipe=NAME [bench.steps=20]"),
    "zoo": Command("zoo", "medzoo.commands.zoo:zoo", "published checkpoints: medzoo zoo list | medzoo zoo info name=NAME"),
}


# Commands whose first word is an action: `medzoo data fetch ...`, `medzoo zoo list`.
ACTION_COMMANDS = ("data", "zoo")
# Commands that read a checkpoint's data from installed configs: `data=NAME` there picks conf/data/NAME.yaml
# (their `data` node holds overrides, so the choice is carried as data.source).
DATA_SOURCE_COMMANDS = ("eval", "zoo")


# Commands that take files as plain arguments after the overrides: `medzoo predict ckpt=NAME a.jpg "b (1).jpg"`.
PATH_COMMANDS = {"predict": "inputs"}
USAGE_WIDTH = 118  # `medzoo --help` folds a recipe's description under its name at this width
# Hydra's own flags that take the next word as their value (that word is not a path).
VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
               "--info", "--experimental-rerun")


def hydra_quote(value: str) -> str:
    """`value` as a quoted string of Hydra's override grammar: any characters, quotes escaped, and backslashes
    doubled where they precede a quote or end the string (the only places Hydra reads them as escapes)."""
    value = re.sub(r"(\\+)(?='|$)", lambda match: match.group(1) * 2, value)
    return "'" + value.replace("'", "\\'") + "'"


def paths_to_override(name: str, argv: list[str]) -> list[str]:
    """Plain arguments of a command that takes files become one quoted list override (`inputs=['a (1).jpg']`),
    so that file names with spaces, parentheses, commas or quotes need no Hydra quoting."""
    key = PATH_COMMANDS.get(name)
    if key is None:
        return argv
    overrides, paths, skip = [], [], False
    for arg in argv:
        if skip or arg.startswith("-") or "=" in arg:
            overrides.append(arg)
            skip = arg in VALUE_FLAGS
            continue
        paths.append(arg)
    if not paths:
        return argv
    if any(arg.split("=", 1)[0].lstrip("+") == key for arg in overrides if "=" in arg):
        raise ConfigError(f"{key}= and plain file arguments both given; use one of them (plain arguments: "
                          f"medzoo {name} ckpt=NAME FILE [FILE ...]).")
    return [*overrides, f"{key}=[{','.join(hydra_quote(path) for path in paths)}]"]


def check_grammar(name: str, argv: list[str]) -> None:
    """A Hydra grammar error in an override is one line naming the argument and how to quote it (Hydra's own
    message points into its grammar, not at the argument)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser, skip = OverridesParser.create(), False
    for position, arg in enumerate(argv, start=1):
        if skip or arg.startswith("-") or "=" not in arg:
            skip = arg in VALUE_FLAGS
            continue
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as exc:
            key, _, value = arg.partition("=")
            files = (f" For files, pass them as plain arguments: medzoo {name} ... FILE [FILE ...]."
                     if name in PATH_COMMANDS else "")
            reason = str(exc).splitlines()[0]
            raise ConfigError(f"argument {position} '{arg}' is not a valid override ({reason}). Quote the value: "
                              f"{key}=\"{hydra_quote(value)}\" (shell quotes outside, Hydra's inside).{files}") from None


def usage() -> str:
    from medzoo.recipes import describe, recipe_files

    lines = ["usage: medzoo <command> [key=value ...] [--cfg job] [-m]", "", "commands:"]
    lines += [f"  {name:<9} {command.help}" for name, command in COMMANDS.items()]
    lines += ["", "recipes (recipe=NAME):"]
    for name, path in recipe_files().items():
        lines += textwrap.wrap(describe(path), width=USAGE_WIDTH, initial_indent=f"  {name:<28} ",
                               subsequent_indent=" " * 31, break_on_hyphens=False)
    lines += ["", "Every run writes into its own folder (runs/<command>/<time>; hydra.run.dir=DIR to choose).",
              "`medzoo <command> --help` shows that command's config groups and settings."]
    return "\n".join(lines)


def _search_path(argv: list[str]) -> list[str]:
    """The entries of `hydra.searchpath=[...]` on the command line (where recipes of one's own live)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    found: list[str] = []
    for arg in argv:
        if arg.lstrip("+").startswith("hydra.searchpath="):
            try:
                value = OverridesParser.create().parse_overrides([arg])[0].value()
            except OverrideParseException:  # Hydra reports it, with its own message, when it parses argv
                continue
            found += [str(entry) for entry in (value if isinstance(value, list) else [value])]
    return found


def _check_names(argv: list[str]) -> None:
    """Fail early, with the closest names, on an unknown recipe (shipped, or in a `hydra.searchpath` folder)."""
    from medzoo.loading.settings import moved_loader_keys
    from medzoo.recipes import check_recipe

    search_path = _search_path(argv)
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key.startswith("data."):  # a loader key written where it was before the loader group
            moved_loader_keys({key[len("data."):]: value})
        if arg.startswith("recipe="):
            for name in arg.split("=", 1)[1].split(","):
                check_recipe(name, search_path)
        elif "=" in arg and arg.split("=", 1)[0].lstrip("+~") in config_groups():
            group, value = arg.lstrip("+~").split("=", 1)
            for name in value.split(","):  # a sweep names several
                _check_group_choice(group, name, search_path)


def config_groups() -> dict[str, list[str]]:
    """Hydra config group -> the choices medzoo installs (conf/GROUP/NAME.yaml)."""
    from importlib import resources

    root = Path(str(resources.files("medzoo.conf")))
    return {folder.name: sorted(path.stem for path in folder.glob("*.yaml"))
            for folder in sorted(root.iterdir()) if folder.is_dir() and any(folder.glob("*.yaml"))}


def _null_choice(arg: str) -> str:
    """`group=null` picks the group's `none` choice where it has one (`explain=null`): Hydra refuses null for a
    config group, and `explain` was a plain setting that took null before it became a group."""
    key, _, value = arg.partition("=")
    if not value or "none" not in config_groups().get(key, ()):
        return arg
    return f"{key}=" + ",".join("none" if name == "null" else name for name in value.split(","))


def _check_group_choice(group: str, name: str, search_path: list[str]) -> None:
    """One line listing the choices for a config group typo (`model=resnet51`), instead of Hydra's
    multi-line search-path report; choices in `hydra.searchpath` folders count too."""
    from medzoo.close_names import unknown_name

    if name in ("null", "") or name in config_groups()[group]:
        return
    own = [Path(entry[len("file://"):]).expanduser() / group / f"{name}.yaml"
           for entry in search_path if entry.startswith("file://")]
    if any(path.exists() for path in own) or any(not entry.startswith("file://") for entry in search_path):
        return
    raise ConfigError(f"{group}={name}: {unknown_name(f'{group} config', name, config_groups()[group])}")


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def import_user_modules(names: Any) -> None:
    """Import the modules that the `imports=[mylab.models, ...]` setting names, before the command runs, so that
    what they register (`register_model`, `register_step`, `register_reader`) is known to it.

    This runs the user's own code by their own choice: the names come from the command line or a recipe, never
    from a checkpoint, a card, a cache or a data file (nothing medzoo reads from a file names code to import).
    A module is found on the Python path: `PYTHONPATH=DIR medzoo ...`, or an installed package.
    """
    from omegaconf import OmegaConf

    names = OmegaConf.to_container(names) if OmegaConf.is_config(names) else names
    if not names:
        return
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and _MODULE_NAME.fullmatch(n) for n in names):
        raise ConfigError(f"imports={names}: a list of module names expected, e.g. imports=[mylab.models].")
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name and not name.startswith(f"{exc.name}."):  # found, but something it imports is not
                raise
            raise ConfigError(f"imports: no module '{name}' on the Python path; put its folder on PYTHONPATH "
                              "(PYTHONPATH=DIR medzoo ...) or install it.") from exc


def command_overrides(name: str, argv: list[str]) -> list[str]:
    """The command line after `medzoo NAME` -> the Hydra overrides it means, checked (grammar, recipe and group
    names) and with the recipes registered; the Python API (medzoo.api) goes through here too."""
    from medzoo.recipes import register_recipes

    if name in ACTION_COMMANDS and argv and "=" not in argv[0] and not argv[0].startswith("-"):
        argv = [f"action={argv[0]}", *argv[1:]]
    if name in DATA_SOURCE_COMMANDS:
        argv = [f"data.source={arg.split('=', 1)[1]}" if arg.startswith("data=") else arg for arg in argv]
    argv = [_null_choice(arg) for arg in paths_to_override(name, argv)]
    check_grammar(name, argv)
    _check_names(argv)
    register_recipes()
    return argv


def instantiation_problem(exc: Exception) -> str:
    """One line for a config class that refused its settings: medzoo's own message where it gave one, else the
    class and the setting it does not take (a key a recipe inherited, a typo in a config of one's own)."""
    cause = exc.__cause__
    while cause is not None and not isinstance(cause, MedzooError):
        if isinstance(cause, TypeError) and "keyword argument" in str(cause):
            target = re.search(r"target '([^']+)'", str(exc))
            where = target.group(1) if target else "a config class"
            return (f"{where} does not take that setting ({cause}); remove the key from the config or the "
                    "command line (a recipe passes on every data.* value of the recipe it extends).")
        cause = cause.__cause__
    if cause is None:
        raise exc
    return str(cause)


def run_command(name: str, argv: list[str]) -> None:
    """Run command `name` as a Hydra app with `argv` as its overrides."""
    import hydra
    from hydra.errors import InstantiationException
    from omegaconf import OmegaConf

    command = COMMANDS[name]
    argv = command_overrides(name, argv)
    job = command.function()

    @hydra.main(config_path="conf", config_name=command.config, version_base="1.3")
    def app(cfg):
        try:
            import_user_modules(OmegaConf.select(cfg, "imports", default=None))
            return job(cfg)
        except MedzooError as exc:
            print(f"medzoo {name}: error: {exc}", file=sys.stderr)
            sys.exit(2)
        except InstantiationException as exc:  # a recipe's class refused a setting: say that, not Hydra's wrap
            print(f"medzoo {name}: error: {instantiation_problem(exc)}", file=sys.stderr)
            sys.exit(2)

    sys.argv = [f"medzoo-{name}", *argv]
    app()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        from medzoo.close_names import unknown_name

        print(f"medzoo: {unknown_name('command', name, COMMANDS)}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    # MONAI's networks import optuna where it is installed (the Optuna sweeper needs it), and its migrations
    # library logs each of its plugins at INFO: a wall of 'setup plugin alembic...' lines in a command's output.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        run_command(name, rest)
    except MedzooError as exc:
        print(f"medzoo {name}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
