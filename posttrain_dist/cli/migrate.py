"""`posttrain-dist migrate CONFIG [--out NEW]`: a config from alignment-handbook, open-r1 or TRL in today's names.

The recipes read such configs as they are (posttrain_dist/migrate.py); this writes the rewritten config
once, so that the file says what runs: renamed keys under their current names, the handbook's and TRL's
data mixtures as `dataset_mixture`, dropped keys gone. Each change is listed on stderr.
"""

from __future__ import annotations

import sys


def add(sub) -> None:
    p = sub.add_parser("migrate", help="rewrite a config from alignment-handbook, open-r1 or TRL in today's names")
    p.add_argument("config", help="the YAML file")
    p.add_argument("--out", help="where to write the new config (default: print it)")
    p.set_defaults(func=run)


def run(args) -> None:
    import yaml

    from .. import migrate, parsing
    from ..errors import ConfigError

    values = parsing.read_yaml(args.config)
    method = values.pop("method", None)
    env = values.pop("env", None)
    migrated, changes, environment = migrate.migrate(values, args.config)
    env = {**environment, **(env or {})} or None
    out = {**({"method": method} if method else {}), **({"env": env} if env else {}), **migrated}
    text = (f"# {args.config} in today's names (posttrain-dist migrate); the changes:\n"
            + "".join(f"#   {c.line()}\n" for c in changes) + yaml.safe_dump(out, sort_keys=False, allow_unicode=True))
    for change in changes:
        print(f"posttrain-dist: {change.line()}", file=sys.stderr)
    if not changes:
        print("posttrain-dist: nothing to change: the config is in today's names", file=sys.stderr)
    if args.out:
        if args.out == args.config:
            raise ConfigError("--out names the config itself; write the new one beside it.")
        with open(args.out, "w") as f:
            f.write(text)
        print(f"written to {args.out}")
    else:
        sys.stdout.write(text)
