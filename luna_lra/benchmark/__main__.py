"""python -m luna_lra.benchmark kernels|model|step|official|gpu ... (see luna_lra/benchmark/__init__.py)."""

from __future__ import annotations

import argparse

from luna_lra import benchmark, host_memory


def main(argv=None):
    from luna_lra.benchmark import gpu, kernels, model, official, step

    parser = argparse.ArgumentParser(prog="python -m luna_lra.benchmark",
                                     description=benchmark.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (kernels, model, step, official, gpu):
        module.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    host_memory.restart_with_huge_pages()
    main()
